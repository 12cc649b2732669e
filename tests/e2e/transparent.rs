//! Transparent capture in a network namespace (being written).
