//! Command-line surface: one module per subcommand.
