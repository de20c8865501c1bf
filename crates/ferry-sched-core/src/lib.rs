//! Ferry's pure scheduling core: cluster model, placement plugins and policies (no I/O, no async)
