//! Which leases a node takes and gives up in one claim round: a pure function of what it sees
//! (every resource of every tenant, the live nodes, what it holds), so it is tested without a
//! database and every node decides the same way.
//!
//! - **Fair share**: `ceil(resources / live nodes)`. Shares add up to at least the number of
//!   resources, so every resource has a node willing to take it even while the nodes' counts
//!   of live nodes briefly differ.
//! - **Acquire**: up to `share - held`, never more than the resources this node does not hold
//!   (the database hands out only free ones: `Leases::acquire_free`).
//! - **Release**: a node holding more than its share (a node joined) gives up the surplus, the
//!   leases it took most recently first, at most the surplus per round; a held resource whose
//!   tenant or mailbox is gone is given up whatever the share.
//! - **Stable**: when the numbers do not change, a node at or below its share releases
//!   nothing, so nothing flaps between nodes.

use std::collections::HashSet;

/// What a node sees at the start of a claim round.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Every resource of every tenant (mailboxes, queues, webhooks), each once.
    pub resources: &'a [String],
    /// Live nodes (their `node:<id>` heartbeat leases), this one included; 0 counts as 1.
    pub live_nodes: usize,
    /// The resources this node holds, oldest acquisition first.
    pub held: &'a [String],
}

/// What to do in this round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// This node's fair share.
    pub share: usize,
    /// How many more to take (at most).
    pub acquire: usize,
    /// The resources it may take them from (those it does not hold), in the given order.
    pub candidates: Vec<String>,
    /// Held resources to give up: gone ones first, then the surplus, newest first.
    pub release: Vec<String>,
}

/// `ceil(resources / live nodes)`.
pub fn fair_share(resources: usize, live_nodes: usize) -> usize {
    resources.div_ceil(live_nodes.max(1))
}

/// The round's plan for `view`.
pub fn plan(view: View<'_>) -> Plan {
    let all: HashSet<&str> = view.resources.iter().map(String::as_str).collect();
    let share = fair_share(all.len(), view.live_nodes);
    // Held resources that no longer exist go first; they do not count against the share.
    let mut release: Vec<String> = view.held.iter().filter(|r| !all.contains(r.as_str())).cloned().collect();
    let still: Vec<&String> = view.held.iter().filter(|r| all.contains(r.as_str())).collect();
    let surplus = still.len().saturating_sub(share);
    release.extend(still.iter().rev().take(surplus).map(|r| (*r).clone()));
    let mine: HashSet<&str> = still.iter().map(|r| r.as_str()).collect();
    let mut seen = HashSet::new();
    let candidates: Vec<String> =
        view.resources.iter().filter(|r| !mine.contains(r.as_str()) && seen.insert(r.as_str())).cloned().collect();
    let acquire = share.saturating_sub(still.len()).min(candidates.len());
    Plan { share, acquire, candidates: if acquire == 0 { Vec::new() } else { candidates }, release }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("mailbox:t/m{i:03}")).collect()
    }

    /// A lease table in memory: resource -> owner, and each node's acquisition order.
    #[derive(Default)]
    struct Table {
        owner: BTreeMap<String, String>,
        order: HashMap<String, Vec<String>>,
    }

    impl Table {
        fn held(&self, node: &str) -> Vec<String> {
            self.order.get(node).cloned().unwrap_or_default()
        }

        /// One claim round of `node` with `live` nodes, as the claimer applies a plan:
        /// releases first, then takes free ones in name order (like `acquire_free`).
        /// Returns (released, acquired).
        fn round(&mut self, node: &str, resources: &[String], live: usize) -> (usize, usize) {
            let held = self.held(node);
            let p = plan(View { resources, live_nodes: live, held: &held });
            for r in &p.release {
                self.owner.remove(r);
                self.order.get_mut(node).unwrap().retain(|x| x != r);
            }
            let mut got = 0;
            for r in &p.candidates {
                if got == p.acquire {
                    break;
                }
                if !self.owner.contains_key(r) {
                    self.owner.insert(r.clone(), node.to_string());
                    self.order.entry(node.to_string()).or_default().push(r.clone());
                    got += 1;
                }
            }
            (p.release.len(), got)
        }

        /// Gives everything of `node` up (shutdown) or lets it expire (killed).
        fn drop_node(&mut self, node: &str) {
            self.owner.retain(|_, o| o != node);
            self.order.remove(node);
        }

        fn counts(&self, nodes: &[&str]) -> Vec<usize> {
            nodes.iter().map(|n| self.held(n).len()).collect()
        }

        /// Rounds of every node in turn until a whole pass changes nothing (at most 10).
        fn settle(&mut self, nodes: &[&str], resources: &[String]) -> usize {
            for pass in 1..=10 {
                let mut changed = 0;
                for n in nodes {
                    let (r, a) = self.round(n, resources, nodes.len());
                    changed += r + a;
                }
                if changed == 0 {
                    return pass;
                }
            }
            panic!("no stable split after 10 passes: {:?}", self.counts(nodes));
        }
    }

    #[test]
    fn the_share_is_the_ceiling_of_resources_per_live_node() {
        assert_eq!(fair_share(12, 3), 4);
        assert_eq!(fair_share(10, 3), 4);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5, "no live node seen yet: this one counts");
        assert_eq!(fair_share(200, 3), 67);
    }

    #[test]
    fn one_node_takes_everything_free() {
        let r = names(5);
        let p = plan(View { resources: &r, live_nodes: 1, held: &[] });
        assert_eq!((p.share, p.acquire, p.candidates.len(), p.release.len()), (5, 5, 5, 0));
        let held = vec![r[1].clone(), r[3].clone()];
        let p = plan(View { resources: &r, live_nodes: 1, held: &held });
        assert_eq!(p.acquire, 3);
        assert_eq!(p.candidates, [r[0].clone(), r[2].clone(), r[4].clone()], "only what it does not hold");
    }

    #[test]
    fn one_then_two_then_three_nodes_converge_to_an_even_split() {
        let r = names(12);
        let mut t = Table::default();
        t.settle(&["a"], &r);
        assert_eq!(t.counts(&["a"]), [12]);
        t.settle(&["a", "b"], &r);
        assert_eq!(t.counts(&["a", "b"]), [6, 6]);
        t.settle(&["a", "b", "c"], &r);
        assert_eq!(t.counts(&["a", "b", "c"]), [4, 4, 4]);
        assert_eq!(t.owner.len(), 12, "every resource held");
        // The first node gave up what it took last: it kept the oldest four.
        assert_eq!(t.held("a"), r[..4].to_vec());
    }

    #[test]
    fn an_uneven_count_leaves_no_node_above_its_share_and_nothing_unheld() {
        let r = names(200);
        let mut t = Table::default();
        let nodes = ["n1", "n2", "n3"];
        t.settle(&nodes[..1], &r);
        t.settle(&nodes, &r);
        let c = t.counts(&nodes);
        assert!(c.iter().all(|&n| n <= 67), "{c:?}");
        assert_eq!(c.iter().sum::<usize>(), 200, "{c:?}");
        assert!(c.iter().all(|&n| n >= 66), "nearly even: {c:?}");
    }

    #[test]
    fn a_leaving_nodes_share_is_taken_by_the_others() {
        let r = names(12);
        let mut t = Table::default();
        let nodes = ["a", "b", "c"];
        t.settle(&nodes, &r);
        assert_eq!(t.counts(&nodes), [4, 4, 4]);
        // b dies (or shuts down): its leases expire, it no longer counts as live.
        let of_b = t.held("b");
        t.drop_node("b");
        let passes = t.settle(&["a", "c"], &r);
        assert_eq!(passes, 2, "one pass takes it all over, the next changes nothing");
        assert_eq!(t.counts(&["a", "c"]), [6, 6]);
        for res in &of_b {
            assert!(t.owner.contains_key(res), "{res} served again");
        }
    }

    #[test]
    fn nothing_flaps_while_the_counts_are_stable() {
        let r = names(10);
        let mut t = Table::default();
        let nodes = ["a", "b", "c"];
        t.settle(&nodes, &r);
        let before = t.owner.clone();
        for _ in 0..20 {
            for n in nodes {
                assert_eq!(t.round(n, &r, 3), (0, 0), "{n} changed something in a stable round");
            }
        }
        assert_eq!(t.owner, before);
    }

    #[test]
    fn at_most_the_surplus_is_released_newest_first() {
        let r = names(9);
        // Held in this acquisition order; with 3 live nodes the share is 3.
        let held: Vec<String> = [4, 0, 7, 2, 8].iter().map(|&i| r[i].clone()).collect();
        let p = plan(View { resources: &r, live_nodes: 3, held: &held });
        assert_eq!(p.share, 3);
        assert_eq!(p.release, [r[8].clone(), r[2].clone()]);
        assert_eq!(p.acquire, 0);
        assert!(p.candidates.is_empty());
    }

    #[test]
    fn a_held_resource_that_is_gone_is_released_and_does_not_count() {
        let r = names(4);
        let held = vec![r[0].clone(), "mailbox:removed/x".to_string(), r[1].clone()];
        let p = plan(View { resources: &r, live_nodes: 2, held: &held });
        assert_eq!(p.release, ["mailbox:removed/x".to_string()]);
        assert_eq!((p.share, p.acquire), (2, 0));
        let p = plan(View { resources: &[], live_nodes: 1, held: &held });
        assert_eq!(p.release.len(), 3, "a tenant removed: all its leases go");
    }
}
