//! Size bounds on what the coordinator takes in and hands out.
//!
//! Every input that costs work or is stored is checked here before the work
//! (a probe's Hello, a run request), and every list reply is cut into pages
//! that stay far below gRPC's 4 MiB message limit, so one oversized input
//! cannot make `meshctl probes` or `meshctl runs` fail for everyone. It
//! stores and lists nothing itself: the registry and the run store call
//! [`page`]; the services call the checks.

use probemesh_proto::pb;
use prost::Message as _;

use crate::error::Error;

/// Labels in a Hello.
pub const MAX_LABELS: usize = 64;
/// Bytes of a label key (a Kubernetes key with its prefix is at most 253).
pub const MAX_LABEL_KEY_BYTES: usize = 253;
/// Bytes of a label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 253;
/// Interfaces in a Hello (a node carries one veth per pod).
pub const MAX_INTERFACES: usize = 1024;
/// Addresses on one interface.
pub const MAX_ADDRESSES_PER_INTERFACE: usize = 64;
/// Bytes of an interface name or one of its addresses (CIDR).
pub const MAX_INTERFACE_FIELD_BYTES: usize = 64;
/// Task kinds a probe announces.
pub const MAX_CAPABILITIES: usize = 64;
/// Bytes of one capability.
pub const MAX_CAPABILITY_BYTES: usize = 64;
/// Bytes of the version string.
pub const MAX_VERSION_BYTES: usize = 128;
/// A whole Hello, encoded.
pub const MAX_HELLO_BYTES: usize = 256 << 10;
/// A whole run request, encoded (targets, names and filters are one line).
pub const MAX_RUN_REQUEST_BYTES: usize = 16 << 10;

/// Items in a list reply when the caller asks for none in particular.
pub const DEFAULT_PAGE_ITEMS: usize = 100;
/// Most items in one list reply.
pub const MAX_PAGE_ITEMS: usize = 500;
/// Most bytes of items in one list reply (gRPC's limit is 4 MiB).
pub const MAX_PAGE_BYTES: usize = 2 << 20;
/// Largest single item a list carries whole; larger stored runs are trimmed.
pub const MAX_ITEM_BYTES: usize = 1 << 20;

const _: () = assert!(MAX_HELLO_BYTES < MAX_ITEM_BYTES && MAX_ITEM_BYTES <= MAX_PAGE_BYTES);

/// Checks a probe's Hello against the bounds above, before it is stored.
pub fn check_hello(hello: &pb::Hello) -> Result<(), Error> {
    let refuse = |what: String| Err(Error::InvalidRequest(format!("hello refused: {what}")));
    let total = hello.encoded_len();
    if total > MAX_HELLO_BYTES {
        return refuse(format!("{total} bytes, at most {MAX_HELLO_BYTES}"));
    }
    if hello.labels.len() > MAX_LABELS {
        return refuse(format!(
            "{} labels, at most {MAX_LABELS}",
            hello.labels.len()
        ));
    }
    for (key, value) in &hello.labels {
        over("label key", key, MAX_LABEL_KEY_BYTES)
            .or_else(|| {
                over(
                    &format!("value of label {}", elide(key)),
                    value,
                    MAX_LABEL_VALUE_BYTES,
                )
            })
            .map_or(Ok(()), refuse)?;
    }
    if hello.interfaces.len() > MAX_INTERFACES {
        return refuse(format!(
            "{} interfaces, at most {MAX_INTERFACES}",
            hello.interfaces.len()
        ));
    }
    for iface in &hello.interfaces {
        if let Some(what) = over("interface name", &iface.name, MAX_INTERFACE_FIELD_BYTES) {
            return refuse(what);
        }
        if iface.addresses.len() > MAX_ADDRESSES_PER_INTERFACE {
            return refuse(format!(
                "{} addresses on interface {}, at most {MAX_ADDRESSES_PER_INTERFACE}",
                iface.addresses.len(),
                iface.name
            ));
        }
        for address in &iface.addresses {
            if let Some(what) = over("address", address, MAX_INTERFACE_FIELD_BYTES) {
                return refuse(what);
            }
        }
    }
    if hello.capabilities.len() > MAX_CAPABILITIES {
        return refuse(format!(
            "{} capabilities, at most {MAX_CAPABILITIES}",
            hello.capabilities.len()
        ));
    }
    for capability in &hello.capabilities {
        if let Some(what) = over("capability", capability, MAX_CAPABILITY_BYTES) {
            return refuse(what);
        }
    }
    over("version", &hello.version, MAX_VERSION_BYTES).map_or(Ok(()), refuse)
}

/// Checks a run request's encoded size before it is planned or stored.
pub fn check_run_request(request: &pb::RunRequest) -> Result<(), Error> {
    let len = request.encoded_len();
    if len > MAX_RUN_REQUEST_BYTES {
        return Err(Error::InvalidRequest(format!(
            "run request refused: {len} bytes, at most {MAX_RUN_REQUEST_BYTES} \
             (targets, probe names and filters are one line each)"
        )));
    }
    Ok(())
}

/// `what` is `value`, if over `max` bytes: says so without echoing it whole.
fn over(what: &str, value: &str, max: usize) -> Option<String> {
    (value.len() > max).then(|| {
        format!(
            "{what} {} is {} bytes, at most {max}",
            elide(value),
            value.len()
        )
    })
}

/// The start of `s`, quoted, for messages about oversized inputs.
pub(crate) fn elide(s: &str) -> String {
    const SHOWN: usize = 32;
    match s.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("'{}…'", s[..cut].escape_debug()),
        None => format!("'{}'", s.escape_debug()),
    }
}

/// How many items a page holds when `asked` for (0: the default).
pub fn page_items(asked: u32) -> usize {
    match usize::try_from(asked) {
        Ok(0) => DEFAULT_PAGE_ITEMS,
        Ok(n) => n.min(MAX_PAGE_ITEMS),
        Err(_) => MAX_PAGE_ITEMS,
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// The key of the last item when more follow; empty on the last page.
    pub next_token: String,
}

/// Cuts the page after the item keyed `token` (from the start when empty)
/// out of `listing`: at most `size` items and [`MAX_PAGE_BYTES`], at least
/// one item when any remain. `fit` copies an item out, trimmed when over
/// [`MAX_ITEM_BYTES`] ([`fit_run`]). A token that names no item any more is
/// refused: the caller lists again from the start.
pub fn page<'a, T: prost::Message + 'a>(
    listing: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> &str,
    token: &str,
    size: usize,
    fit: impl Fn(&T) -> T,
) -> Result<Page<T>, Error> {
    let mut listing = listing.peekable();
    if !token.is_empty() && !listing.by_ref().any(|item| key(item) == token) {
        return Err(Error::InvalidRequest(format!(
            "page token {} names nothing listed any more (it was dropped from the history): list again from the start",
            elide(token)
        )));
    }
    let mut page = Page {
        items: Vec::new(),
        next_token: String::new(),
    };
    let mut bytes = 0;
    while let Some(item) = listing.peek() {
        if page.items.len() >= size.max(1) {
            break;
        }
        let item = fit(item);
        let len = item.encoded_len();
        if !page.items.is_empty() && bytes + len > MAX_PAGE_BYTES {
            break;
        }
        bytes += len;
        page.items.push(item);
        listing.next();
    }
    if listing.peek().is_some() {
        page.next_token = page
            .items
            .last()
            .map(|i| key(i).to_owned())
            .unwrap_or_default();
    }
    Ok(page)
}

/// A copy of `record` for a reply: whole when within [`MAX_ITEM_BYTES`],
/// else (a record stored before requests were bounded) trimmed to its id,
/// requester and times, with an error result that says so.
pub fn fit_run(record: &pb::RunRecord) -> pb::RunRecord {
    let len = record.encoded_len();
    if len <= MAX_ITEM_BYTES {
        return record.clone();
    }
    tracing::warn!(run_id = %record.run_id, bytes = len, "a stored run record is over the reply bound; replying with it trimmed");
    let from = record
        .request
        .as_ref()
        .map(|r| r.from.as_str())
        .unwrap_or_default();
    pb::RunRecord {
        run_id: record.run_id.clone(),
        trace_id: record.trace_id.clone(),
        requester: record.requester.clone(),
        request: Some(pb::RunRequest {
            from: if from.len() > MAX_INTERFACE_FIELD_BYTES {
                elide(from)
            } else {
                from.to_owned()
            },
            kind: None,
        }),
        started_unix_ms: record.started_unix_ms,
        duration_ms: record.duration_ms,
        result: Some(pb::TaskResult {
            outcome: Some(pb::task_result::Outcome::Error(pb::TaskError {
                kind: pb::task_error::Kind::InvalidInput.into(),
                message: format!(
                    "record trimmed: it is {len} bytes, over the {MAX_ITEM_BYTES} a reply carries \
                     (stored before run requests were bounded)"
                ),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, filter_bytes: usize) -> pb::RunRecord {
        pb::RunRecord {
            run_id: id.into(),
            requester: "admin".into(),
            request: Some(pb::RunRequest {
                from: "node-1".into(),
                kind: Some(pb::run_request::Kind::Capture(pb::CaptureRequest {
                    filter: "x".repeat(filter_bytes),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_real_hello_passes_and_each_bound_is_named() {
        let (_, hello) = crate::registry::test_probe(1, "node-1");
        check_hello(&hello).expect("an ordinary hello");
        let refused = |edit: &dyn Fn(&mut pb::Hello)| {
            let mut h = hello.clone();
            edit(&mut h);
            check_hello(&h).unwrap_err().to_string()
        };
        let many = refused(&|h| {
            h.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        });
        assert!(many.contains("65 labels, at most 64"), "{many}");
        let long = refused(&|h| {
            h.labels.insert("zone".into(), "z".repeat(3_500_000));
        });
        assert!(long.contains("bytes, at most 262144"), "{long}");
        assert!(
            long.len() < 200,
            "the refusal does not echo the value: {long}"
        );
        let value = refused(&|h| {
            h.labels.insert("zone".into(), "z".repeat(300));
        });
        assert!(
            value.contains("value of label 'zone'") && value.contains("at most 253"),
            "{value}"
        );
        let ifaces = refused(&|h| {
            h.interfaces = vec![pb::Interface::default(); MAX_INTERFACES + 1];
        });
        assert!(ifaces.contains("1025 interfaces, at most 1024"), "{ifaces}");
        let addrs = refused(&|h| {
            h.interfaces = vec![pb::Interface {
                name: "eth0".into(),
                addresses: vec!["10.0.0.1/24".into(); 65],
                ..Default::default()
            }];
        });
        assert!(
            addrs.contains("65 addresses on interface eth0, at most 64"),
            "{addrs}"
        );
        let caps = refused(&|h| h.capabilities = vec!["ping".into(); 65]);
        assert!(caps.contains("65 capabilities, at most 64"), "{caps}");
        let version = refused(&|h| h.version = "1".repeat(129));
        assert!(
            version.contains("version") && version.contains("at most 128"),
            "{version}"
        );
    }

    #[test]
    fn run_requests_over_the_bound_are_refused() {
        let ok = run("a", 1000).request.unwrap_or_default();
        check_run_request(&ok).expect("a 1 KB request");
        let big = run("a", 2_500_000).request.unwrap_or_default();
        let err = check_run_request(&big).unwrap_err().to_string();
        assert!(err.contains("at most 16384"), "{err}");
    }

    #[test]
    fn pages_follow_each_other_to_the_end_and_stay_under_the_byte_bound() {
        let runs: Vec<_> = (0..250).map(|i| run(&format!("r{i:03}"), 10)).collect();
        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..10 {
            let p = page(runs.iter(), |r| &r.run_id, &token, 100, fit_run).unwrap();
            seen.extend(p.items.into_iter().map(|r| r.run_id));
            token = p.next_token;
            if token.is_empty() {
                break;
            }
        }
        let all: Vec<_> = runs.iter().map(|r| r.run_id.clone()).collect();
        assert_eq!(seen, all);

        // Large records: a page stops at the byte bound, always holding one.
        let large: Vec<_> = (0..5).map(|i| run(&format!("l{i}"), 900_000)).collect();
        let p = page(large.iter(), |r| &r.run_id, "", 100, fit_run).unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.next_token, "l1");
        assert!(p.items.iter().map(|r| r.encoded_len()).sum::<usize>() <= MAX_PAGE_BYTES);

        let err = page(runs.iter(), |r| &r.run_id, "gone", 100, fit_run).unwrap_err();
        assert!(
            err.to_string().contains("list again from the start"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_stored_run_is_listed_trimmed_and_says_so() {
        let runs = [run("small", 10), run("huge", 3_000_000), run("after", 10)];
        let p = page(runs.iter(), |r| &r.run_id, "", 100, fit_run).unwrap();
        let ids: Vec<_> = p.items.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["small", "huge", "after"]);
        let huge = &p.items[1];
        assert!(huge.encoded_len() < 1024);
        assert_eq!(huge.requester, "admin");
        let Some(pb::task_result::Outcome::Error(e)) =
            huge.result.as_ref().and_then(|r| r.outcome.as_ref())
        else {
            panic!("no error result: {huge:?}");
        };
        assert!(e.message.contains("record trimmed"), "{}", e.message);
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_items(0), DEFAULT_PAGE_ITEMS);
        assert_eq!(page_items(7), 7);
        assert_eq!(page_items(u32::MAX), MAX_PAGE_ITEMS);
    }
}
