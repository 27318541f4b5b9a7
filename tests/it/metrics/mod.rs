//! The metrics contract: the families and their help, the exposition formats (text,
//! OpenMetrics, protobuf), series known from the start, and machine context series.

mod contract;
mod machine_context;
mod protobuf;
mod series;
