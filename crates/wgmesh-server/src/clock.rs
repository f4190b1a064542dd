//! Wall-clock time for records (created_at, last_seen, audit). The
//! server is an IO crate, so it may read the clock; everything it stores
//! is unix seconds, except audit entries (milliseconds, to order them).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_secs() -> i64 {
    unix_millis() / 1000
}

pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
