//! Models of the inbox.
