//! KTAP parser (placeholder).
