//! Logic of the `verity-*` tools, kept in a library so the engine's demo can reuse it.
