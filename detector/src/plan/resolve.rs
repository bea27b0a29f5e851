//! Picking the candidate of a role that this kernel has with a prototype
//! that fits.

use std::fmt;

use detector_common::ArgSpec;
use thiserror::Error;

use super::roles::{Hook, Role};
use super::spec::{arg_spec, tracepoint_spec, Unfit};
use crate::btf::{KernelBtf, Proto};

/// A role's resolved target on this kernel, before attaching.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub symbol: String,
    pub spec: ArgSpec,
    /// Candidates skipped on the way, with the reason.
    pub skipped: Vec<Skipped>,
}

/// A candidate passed over, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("{symbol}: {reason}")]
pub struct Skipped {
    pub symbol: &'static str,
    pub reason: SkipReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SkipReason {
    #[error("not in this kernel")]
    NotInKernel,
    #[error(transparent)]
    Unfit(#[from] Unfit),
}

/// No candidate of the role fits this kernel: every one, with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct Unresolved(pub Vec<Skipped>);

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// Picks the first candidate of `role` that BTF knows with a fitting
/// prototype.
pub fn resolve(btf: &KernelBtf, role: &Role) -> Result<Resolved, Unresolved> {
    resolve_with(|sym| btf.func_proto(sym), role)
}

/// [`resolve`] over any source of prototypes (a kernel's BTF, or a
/// recorded digest of one in tests).
pub fn resolve_with(
    proto_of: impl Fn(&str) -> Option<Proto>,
    role: &Role,
) -> Result<Resolved, Unresolved> {
    let mut skipped = Vec::new();
    for &symbol in role.candidates {
        if role.hook == Hook::Tracepoint {
            return Ok(Resolved {
                symbol: symbol.to_string(),
                spec: tracepoint_spec(role.probe),
                skipped,
            });
        }
        let reason = match proto_of(symbol) {
            None => SkipReason::NotInKernel,
            Some(proto) => match arg_spec(role.probe, &proto) {
                Ok(spec) => {
                    return Ok(Resolved {
                        symbol: symbol.to_string(),
                        spec,
                        skipped,
                    })
                }
                Err(why) => SkipReason::Unfit(why),
            },
        };
        skipped.push(Skipped { symbol, reason });
    }
    Err(Unresolved(skipped))
}
