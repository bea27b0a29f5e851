//! Struct offsets and flag bits from the running kernel's BTF.
