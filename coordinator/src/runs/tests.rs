use prost::Message as _;

use super::*;

fn record(id: &str) -> pb::RunRecord {
    pb::RunRecord {
        run_id: id.into(),
        ..Default::default()
    }
}

fn with_state(id: &str, state: pb::RunState) -> pb::RunRecord {
    let mut r = record(id);
    r.set_state(state);
    r
}

/// Every run kept, newest first, read page by page as ListRuns does.
fn all(store: &RunStore) -> Vec<pb::RunRecord> {
    let mut runs = Vec::new();
    let mut token = String::new();
    loop {
        let page = store.page(&token, 100).unwrap();
        runs.extend(page.items);
        if page.next_token.is_empty() {
            return runs;
        }
        token = page.next_token;
    }
}

fn ids(store: &RunStore) -> Vec<String> {
    all(store).into_iter().map(|r| r.run_id).collect()
}

#[test]
fn lists_newest_first_and_finds_by_prefix() {
    let store = RunStore::in_memory();
    store.insert(record("aaaa1111")).unwrap();
    store.insert(record("bbbb2222")).unwrap();
    store.insert(record("aaaa3333")).unwrap();
    let ids: Vec<_> = store
        .page("", 2)
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids, ["aaaa3333", "bbbb2222"]);
    assert_eq!(
        store.get("bbbb").map(|r| r.run_id).as_deref(),
        Some("bbbb2222")
    );
    assert!(store.get("aaaa").is_none(), "ambiguous prefix");
    assert!(store.get("").is_none());
}

#[test]
fn a_later_record_of_a_run_supersedes_the_earlier_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RunStore::open(dir.path().into()).unwrap();
        store
            .insert(with_state("one", pb::RunState::Running))
            .unwrap();
        store
            .insert(with_state("two", pb::RunState::Running))
            .unwrap();
        store.insert(with_state("one", pb::RunState::Done)).unwrap();
        store.insert(with_state("two", pb::RunState::Done)).unwrap();
        assert_eq!(ids(&store), ["two", "one"]);
        assert_eq!(store.get("one").unwrap().state(), pb::RunState::Done);
    }
    let store = RunStore::open(dir.path().into()).unwrap();
    assert_eq!(ids(&store), ["two", "one"]);
    assert!(all(&store).iter().all(|r| r.state() == pb::RunState::Done));
}

#[test]
fn runs_left_running_are_interrupted_at_open_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let store = RunStore::open(dir.path().into()).unwrap();
        store
            .insert(with_state("cut", pb::RunState::Running))
            .unwrap();
        store
            .insert(with_state("whole", pb::RunState::Done))
            .unwrap();
    }
    let store = RunStore::open(dir.path().into()).unwrap();
    assert_eq!(store.get("cut").unwrap().state(), pb::RunState::Interrupted);
    assert_eq!(store.get("whole").unwrap().state(), pb::RunState::Done);
    drop(store);
    let len = std::fs::metadata(&path).unwrap().len();
    let store = RunStore::open(dir.path().into()).unwrap();
    assert_eq!(store.get("cut").unwrap().state(), pb::RunState::Interrupted);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "nothing left to interrupt, nothing written"
    );
}

#[test]
fn a_damaged_record_loses_only_itself_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let store = RunStore::open(dir.path().into()).unwrap();
        for id in ["one", "two", "three"] {
            store.insert(record(id)).unwrap();
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    // Damage the middle record's payload, and tear a write at the end.
    let second = frame::encode(&record("one")).len();
    bytes[second + frame::HEADER_LEN + 1] ^= 0xff;
    bytes.extend_from_slice(&frame::MAGIC);
    bytes.extend_from_slice(&[0x40, 0x01]);
    std::fs::write(&path, bytes).unwrap();
    let store = RunStore::open(dir.path().into()).unwrap();
    assert_eq!(ids(&store), ["three", "one"]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
    store.insert(record("four")).unwrap();
    drop(store);
    let store = RunStore::open(dir.path().into()).unwrap();
    assert_eq!(ids(&store), ["four", "three", "one"]);
}

#[test]
fn is_bounded() {
    let store = RunStore::in_memory();
    for i in 0..(MAX_RUNS + 5) {
        store.insert(record(&i.to_string())).unwrap();
    }
    assert_eq!(all(&store).len(), MAX_RUNS);
    assert!(store.get("0").is_none());
    store.insert(record("5")).unwrap();
    assert_eq!(
        all(&store).len(),
        MAX_RUNS,
        "a superseding record adds nothing"
    );
}

#[test]
#[allow(deprecated)]
fn files_of_the_old_format_are_read_and_converted_keeping_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let old = pb::RunRecord {
        diagnosis: Some(pb::Diagnosis {
            verdict: Some(pb::Verdict {
                legacy_class: "mtu_blackhole".into(),
                ..Default::default()
            }),
            checks: vec![pb::Check {
                legacy_name: "icmp".into(),
                legacy_status: "ok".into(),
                legacy_direction: "forward".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..record("old")
    };
    let mut legacy = old.encode_length_delimited_to_vec();
    legacy.extend(record("older").encode_length_delimited_to_vec());
    std::fs::write(dir.path().join(FILE_NAME), &legacy).unwrap();
    for _ in 0..2 {
        let store = RunStore::open(dir.path().into()).unwrap();
        assert_eq!(ids(&store), ["older", "old"]);
        let d = store.get("old").unwrap().diagnosis.unwrap();
        assert_eq!(d.verdict.unwrap().class(), pb::VerdictClass::MtuBlackhole);
        assert_eq!(d.checks[0].status(), pb::CheckStatus::Ok);
        assert_eq!(d.checks[0].direction(), pb::CheckDirection::Forward);
        assert_eq!(
            store.get("older").unwrap().state(),
            pb::RunState::Unspecified
        );
    }
    let converted = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
    assert!(converted.starts_with(&frame::MAGIC));
    assert_eq!(std::fs::read(dir.path().join(LEGACY_NAME)).unwrap(), legacy);
    assert!(!dir.path().join(WRITE_TEST_NAME).exists());
}
