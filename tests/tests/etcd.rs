//! The etcd the shared-state tests stand on: a real 3-member cluster on
//! loopback elects a new leader when its leader is killed, and takes the
//! killed member back.

use std::time::Instant;

use probemesh_tests::etcd::EtcdCluster;

#[test]
fn a_three_member_cluster_survives_its_leader() {
    let mut cluster = EtcdCluster::start(3);
    assert_eq!(cluster.endpoints().len(), 3);
    let leader = cluster.leader();
    let killed = Instant::now();
    cluster.kill(leader);
    let next = cluster.leader();
    println!(
        "etcd: leader m{leader} killed, m{next} elected in {:?}",
        killed.elapsed()
    );
    assert_ne!(next, leader, "a killed member cannot lead");
    cluster.restart(leader);
    assert!(cluster.leader() < cluster.len());
}
