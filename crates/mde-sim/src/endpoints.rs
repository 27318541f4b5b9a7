//! The endpoint names the simulator counts requests, faults and quota windows under
//! ([`crate::Stats`]'s maps, [`crate::Faults::fail_next`], ...).
//!
//! Owns the names and which of them have a quota. Does not own the handlers that answer them
//! (`identity`, `actions`, `machines`, `blob`).

/// Both AAD token endpoints (v1 and v2).
pub const TOKEN: &str = "token";
/// `GET /api/machineactions`.
pub const LIST: &str = "list_machine_actions";
/// `GET /api/machineactions/{id}`.
pub const GET: &str = "get_machine_action";
/// `GetLiveResponseResultDownloadLink(index=N)`.
pub const LINK: &str = "get_result_download_link";
/// The blob container.
pub const DOWNLOAD: &str = "download";
/// `GET /api/machines`.
pub const LIST_MACHINES: &str = "list_machines";
/// The endpoints with a per-minute and per-hour quota.
pub const QUOTA_ENDPOINTS: [&str; 4] = [LIST, GET, LINK, LIST_MACHINES];
