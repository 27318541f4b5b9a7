//! MDE API client (being written).
pub mod model;
