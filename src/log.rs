//! mmap-backed segmented log (issue 3): not written yet.
