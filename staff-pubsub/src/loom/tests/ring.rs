//! Models of the ring.
