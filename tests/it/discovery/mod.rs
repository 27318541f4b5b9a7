//! Discovery: listing the machine actions (bootstrap, incremental, in flight, at fleet
//! scale) and the scripts that never ran. The quota's share of discovery (a poll cut short by
//! the list quota) is in `quota`.

mod bootstrap;
mod fleet;
mod incremental;
mod not_run_order;
