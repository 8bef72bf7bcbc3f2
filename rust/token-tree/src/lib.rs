//! Token trees for speculative verification (filled in by the token-tree work).
