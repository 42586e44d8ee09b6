//! SPSC byte ring (issue 3): not written yet.
