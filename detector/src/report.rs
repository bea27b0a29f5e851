//! Human and JSON reports of an analysis.
