//! Correlates events into findings. See issue: analyzer.
