//! The routing core, pure: who answers a client's query for the service name or a tenant name.
//!
//! Input: the client (its EDNS Client Subnet prefix, else its source address), the region
//! [`Table`] (the same in every region's file) and the live [`Health`] of each region. Output: an
//! [`Answer`]: the ordered regions, their addresses and the ECS scope to echo. No sockets, no
//! clock: probe results and times come in as parameters, so every region that has the same
//! table and the same health view gives the same answer to the same question, and tests need
//! no network.
//!
//! # Rules
//! 1. A client inside a region's `serves` networks gets that region first (the longest
//!    matching `serves` network decides; `serves` always beats the location networks).
//! 2. Otherwise the client is placed at the location of its longest matching location network
//!    (`[[dns.networks]]`); a client no network matches is placed nowhere and gets the table's
//!    order.
//! 3. After the first region come the others by great-circle distance from the client's place
//!    (a `serves` match places the client at its region), ties by table order.
//! 4. Only healthy regions are answered, at most `answer_count` of them; when no region is
//!    healthy every region is answered (fail open, like every anchor: a resolver that gets
//!    nothing sends its IdP nowhere).
//! 5. A tenant name answers the tenant's home region first while it is healthy (data
//!    residency); without it, the tenant's clients are routed like everyone else's.
//!
//! # ECS scope
//! The scope echoed is the shortest prefix of the client's address inside which every address
//! gets the same ordering: at least the deciding network's length, longer where a more specific
//! network overlaps that block (so a resolver never caches one answer for clients that would
//! get another). Health is not part of the scope; the TTL bounds how long an answer lives.

use std::net::IpAddr;

use ipnet::IpNet;

/// A point on the earth, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    /// Latitude, -90..=90.
    pub lat: f64,
    /// Longitude, -180..=180.
    pub lon: f64,
}

impl GeoPoint {
    /// Great-circle distance in kilometres (haversine; the earth as a sphere is plenty to rank
    /// regions).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// One region as routing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// The region's name (as in its file's `region`).
    pub name: String,
    /// Its public service addresses: what A / AAAA answers carry.
    pub addrs: Vec<IpAddr>,
    /// Where it is.
    pub location: GeoPoint,
    /// Client networks it serves first.
    pub serves: Vec<IpNet>,
}

/// A client network with a known place (for clients outside every `serves` network).
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub net: IpNet,
    pub location: GeoPoint,
}

/// What routing knows about the cluster: the same in every region.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Every region, this one included, in the order of the files' `[[dns.regions]]`.
    pub regions: Vec<Region>,
    /// Location networks.
    pub networks: Vec<Network>,
    /// Tenant → index of its home region in `regions`.
    pub tenants: std::collections::BTreeMap<String, usize>,
    /// Regions per answer (1: one address; more: an ordered fallback set).
    pub answer_count: usize,
}

/// Who asks: an address and how many of its leading bits are meaningful (the ECS source
/// prefix, or the full length for a transport source address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Client {
    /// A client known by its full source address.
    pub fn from_source(addr: IpAddr) -> Client {
        Client {
            addr,
            prefix: max_len(&addr),
        }
    }

    /// A client known by an ECS prefix; the address is truncated to the prefix (the bits
    /// beyond it carry nothing, RFC 7871 §6), and a prefix beyond the family's length is cut
    /// to it.
    pub fn from_subnet(addr: IpAddr, prefix: u8) -> Client {
        let prefix = prefix.min(max_len(&addr));
        let addr = IpNet::new(addr, prefix)
            .map(|n| n.network())
            .unwrap_or(addr);
        Client { addr, prefix }
    }
}

/// Address family of a query (A or AAAA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn holds(self, addr: &IpAddr) -> bool {
        matches!(
            (self, addr),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// The routing decision for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Indices into the table's regions, in answer order.
    pub regions: Vec<usize>,
    /// The addresses to answer, in order (those of `regions` in the asked family).
    pub addrs: Vec<IpAddr>,
    /// The ECS scope prefix to echo.
    pub scope: u8,
    /// No region was healthy: every region is answered.
    pub fail_open: bool,
}

/// How a client is placed (rules 1 and 2), with the length of the deciding network.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Placement {
    /// Inside region `.0`'s `serves` network of length `.1`.
    Served(usize, u8),
    /// At a location network's place, of length `.1`.
    Located(GeoPoint, u8),
    /// Nowhere known.
    Unknown,
}

impl Table {
    /// The ordering of every region for `client` (rules 1-3), ignoring health, and the scope.
    pub fn order(&self, client: &Client) -> (Vec<usize>, u8) {
        let placement = self.place(client);
        let (first, from) = match placement {
            Placement::Served(r, _) => (Some(r), Some(self.regions[r].location)),
            Placement::Located(p, _) => (None, Some(p)),
            Placement::Unknown => (None, None),
        };
        let mut order: Vec<usize> = (0..self.regions.len()).collect();
        if let Some(from) = from {
            // A stable sort keeps table order among equal distances.
            order.sort_by(|a, b| {
                let (da, db) = (
                    from.distance_km(&self.regions[*a].location),
                    from.distance_km(&self.regions[*b].location),
                );
                da.total_cmp(&db)
            });
        }
        if let Some(first) = first {
            order.retain(|r| *r != first);
            order.insert(0, first);
        }
        (order, self.scope(client, placement))
    }

    /// Rules 1 and 2: the longest matching `serves` network, else the longest location network.
    fn place(&self, client: &Client) -> Placement {
        let served = self
            .regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.serves.iter().map(move |n| (i, n)))
            .filter(|(_, n)| n.contains(&client.addr))
            // max_by_key keeps the last maximum: reverse so the table's first region wins ties.
            .rev()
            .max_by_key(|(_, n)| n.prefix_len());
        if let Some((i, n)) = served {
            return Placement::Served(i, n.prefix_len());
        }
        let located = self
            .networks
            .iter()
            .filter(|n| n.net.contains(&client.addr))
            .rev()
            .max_by_key(|n| n.net.prefix_len());
        match located {
            Some(n) => Placement::Located(n.location, n.net.prefix_len()),
            None => Placement::Unknown,
        }
    }

    /// The ECS scope: the shortest prefix of the client's address within which every address
    /// is placed alike. See the module docs.
    fn scope(&self, client: &Client, placement: Placement) -> u8 {
        let serves = self.regions.iter().flat_map(|r| r.serves.iter());
        let locations = self.networks.iter().map(|n| &n.net);
        let (decided, relevant): (u8, Vec<&IpNet>) = match placement {
            // Inside a serves network only a more specific serves network changes the answer.
            Placement::Served(_, len) => (len, serves.collect()),
            Placement::Located(_, len) => (len, serves.chain(locations).collect()),
            Placement::Unknown => (0, serves.chain(locations).collect()),
        };
        let mut scope = decided;
        for n in relevant {
            if n.prefix_len() <= decided {
                continue;
            }
            let Some(common) = common_prefix(&client.addr, &n.network()) else {
                continue; // another family
            };
            // The block client/L overlaps n exactly when L <= common (n is not around the
            // client, else it would have decided), so the scope must reach past `common`.
            if common >= decided {
                scope = scope.max(common.saturating_add(1).min(n.prefix_len()));
            }
        }
        scope.min(max_len(&client.addr))
    }

    /// The answer for `client` asking for `family` addresses: the service name when `tenant`
    /// is `None`, else the tenant's name (rule 5; a tenant without a home is routed like the
    /// service name). `healthy[i]` is region `i`'s current health.
    pub fn answer(
        &self,
        client: &Client,
        family: Family,
        tenant: Option<&str>,
        healthy: &[bool],
    ) -> Answer {
        let (mut order, scope) = self.order(client);
        if let Some(home) = tenant.and_then(|t| self.tenants.get(t)).copied() {
            if healthy.get(home).copied().unwrap_or(true) {
                order.retain(|r| *r != home);
                order.insert(0, home);
            }
        }
        // Regions without an address of the asked family cannot be answered.
        order.retain(|r| self.regions[*r].addrs.iter().any(|a| family.holds(a)));
        let up: Vec<usize> = order
            .iter()
            .copied()
            .filter(|r| healthy.get(*r).copied().unwrap_or(true))
            .take(self.answer_count.max(1))
            .collect();
        let fail_open = up.is_empty() && !order.is_empty();
        let regions = if fail_open { order } else { up };
        let addrs = regions
            .iter()
            .flat_map(|r| self.regions[*r].addrs.iter())
            .filter(|a| family.holds(a))
            .copied()
            .collect();
        Answer {
            regions,
            addrs,
            scope,
            fail_open,
        }
    }

    /// The index of region `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Leading bits two addresses share; `None` across families.
fn common_prefix(a: &IpAddr, b: &IpAddr) -> Option<u8> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            Some((u32::from(*a) ^ u32::from(*b)).leading_zeros().min(32) as u8)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            Some((u128::from(*a) ^ u128::from(*b)).leading_zeros().min(128) as u8)
        }
        _ => None,
    }
}

/// Probe hysteresis: a region goes down after `fall` failed probes in a row and up again after
/// `rise` good ones, so one lost probe does not move traffic and a flapping region does not
/// pull it back at its first good answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    pub fall: u32,
    pub rise: u32,
}

/// One region's health as seen by this region's prober.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Answered or not. Regions start up: before the first probes nothing is known, and
    /// answering them is what fail-open would do anyway.
    pub up: bool,
    /// Good probes in a row.
    pub ok_streak: u32,
    /// Failed probes in a row.
    pub fail_streak: u32,
    /// When `up` last changed (or the prober started), in the caller's milliseconds.
    pub since_ms: u64,
    /// Probes seen, and state changes.
    pub probes: u64,
    pub flips: u64,
    /// The last probe's outcome, for the health view (`None` before the first).
    pub last_ok: Option<bool>,
}

/// A change of a region's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Down,
    Up,
}

impl Health {
    /// A region not probed yet, at `now_ms`.
    pub fn new(now_ms: u64) -> Health {
        Health {
            up: true,
            ok_streak: 0,
            fail_streak: 0,
            since_ms: now_ms,
            probes: 0,
            flips: 0,
            last_ok: None,
        }
    }

    /// Take one probe result; the flip it caused, if any.
    pub fn observe(&mut self, ok: bool, now_ms: u64, h: Hysteresis) -> Option<Flip> {
        self.probes += 1;
        self.last_ok = Some(ok);
        if ok {
            self.ok_streak = self.ok_streak.saturating_add(1);
            self.fail_streak = 0;
        } else {
            self.fail_streak = self.fail_streak.saturating_add(1);
            self.ok_streak = 0;
        }
        let flip = if self.up && self.fail_streak >= h.fall.max(1) {
            Some(Flip::Down)
        } else if !self.up && self.ok_streak >= h.rise.max(1) {
            Some(Flip::Up)
        } else {
            None
        };
        if let Some(f) = flip {
            self.up = f == Flip::Up;
            self.since_ms = now_ms;
            self.flips += 1;
        }
        flip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const FRANKFURT: GeoPoint = GeoPoint {
        lat: 50.1,
        lon: 8.7,
    };
    const VIRGINIA: GeoPoint = GeoPoint {
        lat: 38.9,
        lon: -77.4,
    };
    const SINGAPORE: GeoPoint = GeoPoint {
        lat: 1.35,
        lon: 103.8,
    };

    /// eu, us, ap with one v4 and one v6 address each; eu serves 10.1/16, us 10.2/16, ap 10.3/16.
    fn table() -> Table {
        let region = |name: &str, n: u8, location, serves: &[&str]| Region {
            name: name.into(),
            addrs: vec![
                IpAddr::V4(Ipv4Addr::new(127, 0, 1, n)),
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n.into())),
            ],
            location,
            serves: serves.iter().map(|s| net(s)).collect(),
        };
        Table {
            regions: vec![
                region("eu", 1, FRANKFURT, &["10.1.0.0/16"]),
                region("us", 2, VIRGINIA, &["10.2.0.0/16", "10.1.7.0/24"]),
                region("ap", 3, SINGAPORE, &["10.3.0.0/16"]),
            ],
            networks: vec![
                // Somewhere in India: ap, then eu, then us.
                Network {
                    net: net("192.0.2.0/24"),
                    location: GeoPoint {
                        lat: 19.0,
                        lon: 72.8,
                    },
                },
                // Brazil: us first.
                Network {
                    net: net("198.51.100.0/24"),
                    location: GeoPoint {
                        lat: -23.5,
                        lon: -46.6,
                    },
                },
                Network {
                    net: net("2001:db8::/32"),
                    location: SINGAPORE,
                },
            ],
            tenants: [("acme".to_string(), 0usize), ("globex".to_string(), 2)].into(),
            answer_count: 1,
        }
    }

    fn names(t: &Table, a: &Answer) -> Vec<String> {
        a.regions
            .iter()
            .map(|r| t.regions[*r].name.clone())
            .collect()
    }

    const ALL_UP: [bool; 3] = [true, true, true];

    #[test]
    fn distances_are_great_circle_kilometres() {
        let d = FRANKFURT.distance_km(&VIRGINIA);
        assert!((6400.0..6700.0).contains(&d), "{d}");
        assert_eq!(FRANKFURT.distance_km(&FRANKFURT), 0.0);
        let antipode = GeoPoint { lat: 0.0, lon: 0.0 }.distance_km(&GeoPoint {
            lat: 0.0,
            lon: 180.0,
        });
        assert!((antipode - 20015.0).abs() < 5.0, "{antipode}");
    }

    #[test]
    fn a_client_in_a_serves_network_gets_that_region_first_then_the_nearest() {
        let t = table();
        let mut t3 = t.clone();
        t3.answer_count = 3;
        let a = t3.answer(
            &Client::from_source(ip("10.3.9.9")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t3, &a), ["ap", "eu", "us"]);
        assert_eq!(a.addrs, [ip("127.0.1.3"), ip("127.0.1.1"), ip("127.0.1.2")]);
        let a = t.answer(
            &Client::from_source(ip("10.2.0.1")),
            Family::V6,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &a), ["us"]);
        assert_eq!(a.addrs, [ip("fd00::2")]);
    }

    #[test]
    fn the_longest_serves_network_decides() {
        let t = table();
        let a = t.answer(
            &Client::from_source(ip("10.1.7.5")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &a), ["us"]);
        let a = t.answer(
            &Client::from_source(ip("10.1.8.5")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &a), ["eu"]);
    }

    #[test]
    fn outside_every_serves_network_the_nearest_to_the_located_network_wins() {
        let mut t = table();
        t.answer_count = 3;
        let india = t.answer(
            &Client::from_source(ip("192.0.2.77")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &india), ["ap", "eu", "us"]);
        let brazil = t.answer(
            &Client::from_source(ip("198.51.100.1")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &brazil), ["us", "eu", "ap"]);
        // Nowhere known: the table's order. The scope still keeps the block clear of every
        // network: 203.0.113.1 shares 4 leading bits with 198.51.100.0/24, so /5.
        let unknown = t.answer(
            &Client::from_source(ip("203.0.113.1")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &unknown), ["eu", "us", "ap"]);
        assert_eq!(unknown.scope, 5);
    }

    #[test]
    fn ecs_is_used_instead_of_the_source_address() {
        let t = table();
        // The resolver sits in eu's network; its client in ap's.
        let ecs = Client::from_subnet(ip("10.3.44.0"), 24);
        let a = t.answer(&ecs, Family::V4, None, &ALL_UP);
        assert_eq!(names(&t, &a), ["ap"]);
        assert_eq!(a.scope, 16);
        // Bits beyond the source prefix are ignored; a too long prefix is cut to the family's.
        assert_eq!(
            Client::from_subnet(ip("10.3.44.99"), 24).addr,
            ip("10.3.44.0")
        );
        assert_eq!(Client::from_subnet(ip("10.3.44.99"), 99).prefix, 32);
    }

    #[test]
    fn the_scope_covers_exactly_the_block_that_is_answered_alike() {
        let t = table();
        // In eu's 10.1/16 but outside us's 10.1.7/24: the /16 would include the /24, so the
        // scope must be long enough to exclude it: 10.1.8.x shares 20 bits with 10.1.7.0.
        let a = t.answer(
            &Client::from_source(ip("10.1.8.5")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(a.scope, 21);
        // Far from the /24 inside the /16: still 17 (10.1.128.0/17 excludes 10.1.7.0/24).
        let a = t.answer(
            &Client::from_source(ip("10.1.200.1")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(a.scope, 17);
        // Inside the /24 itself: the /24.
        let a = t.answer(
            &Client::from_source(ip("10.1.7.5")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(a.scope, 24);
        let a = t.answer(
            &Client::from_source(ip("2001:db8::1")),
            Family::V6,
            None,
            &ALL_UP,
        );
        assert_eq!(a.scope, 32);
    }

    #[test]
    fn unhealthy_regions_are_skipped_and_the_next_nearest_answers() {
        let mut t = table();
        t.answer_count = 2;
        let c = Client::from_source(ip("10.3.0.1"));
        let a = t.answer(&c, Family::V4, None, &[true, true, false]);
        assert_eq!(names(&t, &a), ["eu", "us"]);
        let a = t.answer(&c, Family::V4, None, &[false, true, false]);
        assert_eq!(names(&t, &a), ["us"]);
        assert!(!a.fail_open);
    }

    #[test]
    fn every_region_down_answers_every_region() {
        let t = table();
        let a = t.answer(
            &Client::from_source(ip("10.3.0.1")),
            Family::V4,
            None,
            &[false; 3],
        );
        assert!(a.fail_open);
        assert_eq!(names(&t, &a), ["ap", "eu", "us"]);
        assert_eq!(a.addrs.len(), 3);
    }

    #[test]
    fn a_tenant_name_answers_its_home_first_while_it_is_healthy() {
        let t = table();
        let in_ap = Client::from_source(ip("10.3.0.1"));
        let a = t.answer(&in_ap, Family::V4, Some("acme"), &ALL_UP);
        assert_eq!(names(&t, &a), ["eu"]);
        // Home down: the client's own routing.
        let a = t.answer(&in_ap, Family::V4, Some("acme"), &[false, true, true]);
        assert_eq!(names(&t, &a), ["ap"]);
        let mut t3 = t.clone();
        t3.answer_count = 3;
        let a = t3.answer(&in_ap, Family::V4, Some("acme"), &[false, true, true]);
        assert_eq!(names(&t3, &a), ["ap", "us"]);
        // An unknown tenant is routed like the service name.
        let a = t.answer(&in_ap, Family::V4, Some("nobody"), &ALL_UP);
        assert_eq!(names(&t, &a), ["ap"]);
    }

    #[test]
    fn regions_without_the_asked_family_are_not_answered() {
        let mut t = table();
        t.regions[2].addrs.retain(|a| a.is_ipv6());
        let a = t.answer(
            &Client::from_source(ip("10.3.0.1")),
            Family::V4,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &a), ["eu"]);
        let a = t.answer(
            &Client::from_source(ip("10.3.0.1")),
            Family::V6,
            None,
            &ALL_UP,
        );
        assert_eq!(names(&t, &a), ["ap"]);
    }

    #[test]
    fn health_goes_down_after_fall_failures_and_up_after_rise_successes() {
        let h = Hysteresis { fall: 3, rise: 2 };
        let mut s = Health::new(0);
        assert!(s.up);
        assert_eq!(s.observe(false, 1, h), None);
        assert_eq!(s.observe(false, 2, h), None);
        // One good probe resets the count.
        assert_eq!(s.observe(true, 3, h), None);
        assert_eq!(s.observe(false, 4, h), None);
        assert_eq!(s.observe(false, 5, h), None);
        assert_eq!(s.observe(false, 6, h), Some(Flip::Down));
        assert!(!s.up);
        assert_eq!(s.since_ms, 6);
        assert_eq!(s.observe(false, 7, h), None);
        assert_eq!(s.observe(true, 8, h), None);
        assert!(!s.up, "one good probe is not enough");
        assert_eq!(s.observe(true, 9, h), Some(Flip::Up));
        assert!(s.up);
        assert_eq!((s.flips, s.probes), (2, 9));
    }

    fn arb_point() -> impl Strategy<Value = GeoPoint> {
        (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lon)| GeoPoint { lat, lon })
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        // Small address space so that networks overlap and clients fall into them often.
        (0u32..16, 8u8..=28).prop_map(|(hi, len)| {
            let addr = Ipv4Addr::from(0x0a00_0000 | (hi << 16) | (hi * 37 % 251) << 8);
            IpNet::new(IpAddr::V4(addr), len).unwrap().trunc()
        })
    }

    fn arb_table() -> impl Strategy<Value = Table> {
        let region = (arb_point(), prop::collection::vec(arb_net(), 0..3));
        (
            prop::collection::vec(region, 1..5),
            prop::collection::vec((arb_net(), arb_point()), 0..4),
            1usize..4,
        )
            .prop_map(|(regions, networks, answer_count)| Table {
                regions: regions
                    .into_iter()
                    .enumerate()
                    .map(|(i, (location, serves))| Region {
                        name: format!("r{i}"),
                        addrs: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8 + 1))],
                        location,
                        serves,
                    })
                    .collect(),
                networks: networks
                    .into_iter()
                    .map(|(net, location)| Network { net, location })
                    .collect(),
                tenants: [("t".to_string(), 0usize)].into(),
                answer_count,
            })
    }

    fn arb_client() -> impl Strategy<Value = Client> {
        (0u32..0x0010_0000, 0u8..=32).prop_map(|(low, prefix)| {
            Client::from_subnet(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | low)), prefix)
        })
    }

    proptest! {
        /// Every address inside the echoed scope gets the same ordering: a resolver that
        /// caches the answer for the whole block hands no client another region's answer.
        #[test]
        fn every_address_in_the_scope_is_ordered_alike(
            t in arb_table(), c in arb_client(), salt in any::<u32>()
        ) {
            let (order, scope) = t.order(&c);
            prop_assert!(scope <= 32);
            let IpAddr::V4(v4) = c.addr else { unreachable!() };
            let host_bits = 32 - u32::from(scope);
            let mask = if host_bits == 32 { u32::MAX } else { (1u32 << host_bits) - 1 };
            let other = Ipv4Addr::from((u32::from(v4) & !mask) | (salt & mask));
            let (other_order, _) = t.order(&Client::from_source(IpAddr::V4(other)));
            prop_assert_eq!(order, other_order);
        }

        /// The answer is a function of its inputs only (every region answers alike), lists
        /// only healthy regions unless none is, never more than answer_count, never twice.
        #[test]
        fn answers_are_healthy_bounded_and_deterministic(
            t in arb_table(), c in arb_client(), health in prop::collection::vec(any::<bool>(), 5),
            tenant in prop::option::of(Just("t"))
        ) {
            let healthy = &health[..t.regions.len()];
            let a = t.answer(&c, Family::V4, tenant, healthy);
            prop_assert_eq!(&a, &t.clone().answer(&c, Family::V4, tenant, healthy));
            let mut seen = a.regions.clone();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), a.regions.len());
            if healthy.iter().any(|h| *h) {
                prop_assert!(!a.fail_open);
                prop_assert!(!a.regions.is_empty());
                prop_assert!(a.regions.len() <= t.answer_count);
                prop_assert!(a.regions.iter().all(|r| healthy[*r]));
                // The first healthy region of the full order comes first (home first for t).
                let (order, _) = t.order(&c);
                let expect = if tenant.is_some() && healthy[0] {
                    0
                } else {
                    *order.iter().find(|r| healthy[**r]).unwrap()
                };
                prop_assert_eq!(a.regions[0], expect);
            } else {
                prop_assert!(a.fail_open);
                prop_assert_eq!(a.regions.len(), t.regions.len());
            }
        }

        /// Hysteresis: the state flips only after `fall` failures / `rise` successes in a row.
        #[test]
        fn health_flips_only_after_full_streaks(
            probes in prop::collection::vec(any::<bool>(), 0..60), fall in 1u32..5, rise in 1u32..5
        ) {
            let h = Hysteresis { fall, rise };
            let mut s = Health::new(0);
            let mut run = (0u32, 0u32);
            for (t, ok) in probes.into_iter().enumerate() {
                run = if ok { (run.0 + 1, 0) } else { (0, run.1 + 1) };
                let was = s.up;
                let flip = s.observe(ok, t as u64, h);
                match flip {
                    Some(Flip::Down) => prop_assert!(was && run.1 == fall),
                    Some(Flip::Up) => prop_assert!(!was && run.0 == rise),
                    None => prop_assert!(
                        (was && run.1 < fall) || (!was && run.0 < rise) || was == ok
                    ),
                }
            }
        }
    }
}
