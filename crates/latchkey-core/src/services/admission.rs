//! Per-address login rate limits, checked before any hashing: each client address has a token
//! bucket (`login_burst_per_address` at once, then `login_rate_per_address` per second; GCRA,
//! the `governor` crate). A login beyond it is refused with [`Error::RateLimited`] (429 with
//! `Retry-After`). IPv6 addresses are limited per /64, the block one subscriber usually holds.
//!
//! The buckets live in this process: N latchkey processes behind a load balancer allow N times
//! the rate. Buckets back at rest are forgotten by the housekeeping, so the map only holds
//! addresses seen recently.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

pub struct LoginLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl LoginLimiter {
    /// No limit when `per_second` is 0.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    /// Takes one login from `address`'s bucket, or answers how long to wait.
    pub fn check(&self, address: IpAddr) -> Result<()> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&bucket_of(address)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::RateLimited {
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Forgets the buckets that are full again; answers how many addresses remain.
    pub fn forget_idle(&self) -> usize {
        match &self.limiter {
            Some(limiter) => {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            }
            None => 0,
        }
    }
}

/// The key of an address: IPv4 as is, IPv6 by its /64 (an IPv4-mapped one as IPv4).
fn bucket_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_waits_and_others_are_unaffected() {
        let limiter = LoginLimiter::new(1, 3);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..3 {
            limiter.check(a).unwrap();
        }
        match limiter.check(a) {
            Err(Error::RateLimited { retry_after }) => assert_eq!(retry_after, 1),
            other => panic!("expected RateLimited, got {other:?}"),
        }
        limiter.check("203.0.113.8".parse().unwrap()).unwrap();
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let limiter = LoginLimiter::new(1, 1);
        limiter.check("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(limiter
            .check("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_err());
        limiter.check("2001:db8:1:3::1".parse().unwrap()).unwrap();
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let limiter = LoginLimiter::new(0, 0);
        for _ in 0..1000 {
            limiter.check("198.51.100.1".parse().unwrap()).unwrap();
        }
    }
}
