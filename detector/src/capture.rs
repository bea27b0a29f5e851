//! Ring-buffer reader: kernel events into the userspace pipeline.
