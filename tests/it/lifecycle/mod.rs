//! The process's life: the command line and `--config.check`, reload, restart and SIGKILL on
//! the state file, a jumping wall clock, sharding over processes, the `transcript` command,
//! and the endpoint-gone warnings a long-running exporter gives.

mod cli;
mod clock_jump;
mod deprecation;
mod reload;
mod restart;
mod sharding;
mod state_file;
mod tenant_files;
mod transcript_cmd;
