//! The coordinators a probe may attach to (`--coordinator
//! https://A:PORT,https://B:PORT`), and which one it dials next.
//!
//! Sans-IO: the caller supplies the randomness and does the dialling. The
//! order is shuffled once at start, so probes given the same list spread
//! over the coordinators; a failed attempt or a GoAway moves to the next
//! address, so a dead coordinator is left at once and any live one serves.
//! The wait between attempts stays the link's exponential backoff.

use probemesh_proto::tls::coordinator_host;
use rand::seq::SliceRandom as _;

/// Most addresses one `--coordinator` list may hold.
pub const MAX_COORDINATORS: usize = 16;

/// Why a `--coordinator` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCoordinators {
    /// Nothing but commas and blanks.
    #[error("--coordinator names no address; give https://HOST:PORT[,https://HOST:PORT ...]")]
    Empty,
    /// More than [`MAX_COORDINATORS`] addresses.
    #[error(
        "--coordinator lists {0} addresses; at most {MAX_COORDINATORS} (put a Service address in front of more)"
    )]
    TooMany(usize),
    /// One entry is not `https://HOST:PORT`.
    #[error("--coordinator entry '{url}': {reason}")]
    Url { url: String, reason: String },
}

/// The coordinator addresses and the one to dial next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinators {
    urls: Vec<String>,
    next: usize,
}

impl Coordinators {
    /// Parses a comma-separated list of `https://HOST:PORT` (blanks around
    /// entries ignored, repeats dropped), in the order given.
    pub fn parse(list: &str) -> Result<Self, InvalidCoordinators> {
        let mut urls: Vec<String> = Vec::new();
        for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            coordinator_host(url).map_err(|e| InvalidCoordinators::Url {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
            if !urls.iter().any(|u| u == url) {
                urls.push(url.to_owned());
            }
        }
        match urls.len() {
            0 => Err(InvalidCoordinators::Empty),
            n if n > MAX_COORDINATORS => Err(InvalidCoordinators::TooMany(n)),
            _ => Ok(Self { urls, next: 0 }),
        }
    }

    /// Puts the addresses in a random order, starting from the first.
    pub fn shuffle(&mut self, rng: &mut impl rand::Rng) {
        self.urls.shuffle(rng);
        self.next = 0;
    }

    /// The address to dial now.
    pub fn current(&self) -> &str {
        // `parse` never builds an empty list and `advance` wraps.
        self.urls.get(self.next).map_or("", String::as_str)
    }

    /// Moves to the next address (after a failed attempt, a closed stream
    /// or a GoAway), wrapping around.
    pub fn advance(&mut self) {
        self.next = (self.next + 1) % self.urls.len().max(1);
    }

    /// Whether there is more than one address to choose from.
    pub fn several(&self) -> bool {
        self.urls.len() > 1
    }

    /// Every address, in dialling order from the current one.
    pub fn in_order(&self) -> impl Iterator<Item = &str> + Clone {
        let n = self.urls.len();
        (0..n).filter_map(move |i| self.urls.get((self.next + i) % n).map(String::as_str))
    }

    /// The list as given on the command line (comma-separated).
    pub fn joined(&self) -> String {
        self.urls.join(",")
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn a_list_is_parsed_trimmed_and_deduplicated() {
        let c = Coordinators::parse(" https://a:7443, https://b:7443,,https://a:7443 ").unwrap();
        assert_eq!(c.joined(), "https://a:7443,https://b:7443");
        assert_eq!(c.current(), "https://a:7443");
    }

    #[test]
    fn bad_lists_name_the_entry() {
        assert_eq!(Coordinators::parse(" , "), Err(InvalidCoordinators::Empty));
        let err = Coordinators::parse("https://a:7443,b:7443").unwrap_err();
        assert!(
            matches!(&err, InvalidCoordinators::Url { url, .. } if url == "b:7443"),
            "{err}"
        );
        let many: Vec<String> = (0..17).map(|i| format!("https://h{i}:1")).collect();
        assert_eq!(
            Coordinators::parse(&many.join(",")),
            Err(InvalidCoordinators::TooMany(17))
        );
    }

    #[test]
    fn advancing_visits_every_address_then_wraps() {
        let mut c = Coordinators::parse("https://a:1,https://b:1,https://c:1").unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(c.current().to_owned());
            c.advance();
        }
        assert_eq!(
            seen,
            ["https://a:1", "https://b:1", "https://c:1", "https://a:1"]
        );
        assert_eq!(
            c.in_order().collect::<Vec<_>>(),
            ["https://b:1", "https://c:1", "https://a:1"]
        );
    }

    #[test]
    fn shuffling_spreads_first_choices_over_every_address() {
        let list = "https://a:1,https://b:1,https://c:1";
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..60 {
            let mut c = Coordinators::parse(list).unwrap();
            c.shuffle(&mut rng);
            assert_eq!(c.in_order().count(), 3);
            firsts.insert(c.current().to_owned());
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }
}
