//! The dependency graph of a flow, computed without I/O: given each job's `depends`
//! (`job id -> ids it waits for`), [`layout`] checks that every dependency is in the
//! flow and that there is no cycle, and returns the edges, roots, leaves and
//! topological levels the spec's `FlowDag` lists.
//!
//! Every list is sorted, so one graph always gets one answer. An edge is `[from, to]`:
//! `from` must finish before `to` runs (`from` is the dependency). A job's level is the
//! length of the longest dependency chain below it: level 0 holds the jobs that depend
//! on nothing, and every job of level `k` waits for at least one job of level `k - 1`.
//! The jobs of one level may run in parallel.
//!
//! Iterative throughout (no recursion), so a long chain cannot exhaust the stack.

use std::collections::{BTreeMap, BTreeSet};

/// One unknown dependency: `job` depends on `depends_on`, which is not in the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct MissingDependency {
    /// The job that names it.
    pub job: u32,
    /// The id that is not in the flow.
    pub depends_on: u32,
}

/// Why a graph is not a DAG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// Some jobs depend on jobs that are not in the flow (every such pair, sorted).
    #[error("dependencies outside the flow: {}", describe_missing(.0))]
    MissingDependency(Vec<MissingDependency>),
    /// The dependencies form a cycle: each job of `path` depends on the next, and the
    /// last is the first again (`[4, 4]` for a job that depends on itself).
    #[error("dependency cycle: {}", describe_path(.0))]
    Cycle(Vec<u32>),
}

fn describe_missing(missing: &[MissingDependency]) -> String {
    let pairs: Vec<String> = missing
        .iter()
        .map(|m| format!("job {} depends on {}", m.job, m.depends_on))
        .collect();
    pairs.join(", ")
}

fn describe_path(path: &[u32]) -> String {
    let ids: Vec<String> = path.iter().map(u32::to_string).collect();
    ids.join(" -> ")
}

/// The shape of a valid DAG (module docs for the conventions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// `[dependency, dependent]`, sorted.
    pub edges: Vec<[u32; 2]>,
    /// `[dependent, dependency]`: every edge turned around, sorted.
    pub reverse_edges: Vec<[u32; 2]>,
    /// Jobs that depend on nothing, ascending.
    pub roots: Vec<u32>,
    /// Jobs nothing depends on, ascending.
    pub leaves: Vec<u32>,
    /// Topological layers, each ascending.
    pub levels: Vec<Vec<u32>>,
}

/// Checks `graph` (job id -> the ids it depends on; repeats are ignored) and lays it
/// out. Unknown dependencies are reported before cycles.
pub fn layout(graph: &BTreeMap<u32, Vec<u32>>) -> Result<Layout, DagError> {
    let mut missing: Vec<MissingDependency> = graph
        .iter()
        .flat_map(|(&job, deps)| {
            deps.iter()
                .filter(|d| !graph.contains_key(d))
                .map(move |&depends_on| MissingDependency { job, depends_on })
        })
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        missing.dedup();
        return Err(DagError::MissingDependency(missing));
    }
    // Deduplicated dependencies and dependents per job.
    let deps: BTreeMap<u32, BTreeSet<u32>> = graph
        .iter()
        .map(|(&job, d)| (job, d.iter().copied().collect()))
        .collect();
    let mut dependents: BTreeMap<u32, BTreeSet<u32>> =
        graph.keys().map(|&job| (job, BTreeSet::new())).collect();
    for (&job, ds) in &deps {
        for d in ds {
            dependents.entry(*d).or_default().insert(job);
        }
    }
    // Kahn's algorithm, one layer at a time: a job joins the layer after its last
    // dependency's, which is its longest-path depth.
    let mut waiting_on: BTreeMap<u32, usize> =
        deps.iter().map(|(&job, ds)| (job, ds.len())).collect();
    let mut layer: Vec<u32> = waiting_on
        .iter()
        .filter(|&(_, &n)| n == 0)
        .map(|(&job, _)| job)
        .collect();
    let roots = layer.clone();
    let mut levels = Vec::new();
    let mut placed = 0usize;
    while !layer.is_empty() {
        let mut next = Vec::new();
        for job in &layer {
            for dependent in dependents.get(job).into_iter().flatten() {
                if let Some(n) = waiting_on.get_mut(dependent) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        next.push(*dependent);
                    }
                }
            }
        }
        placed = placed.saturating_add(layer.len());
        next.sort_unstable();
        levels.push(std::mem::replace(&mut layer, next));
    }
    if placed < deps.len() {
        return Err(DagError::Cycle(find_cycle(&deps, &waiting_on)));
    }
    let mut edges: Vec<[u32; 2]> = deps
        .iter()
        .flat_map(|(&job, ds)| ds.iter().map(move |&d| [d, job]))
        .collect();
    edges.sort_unstable();
    let mut reverse_edges: Vec<[u32; 2]> = edges.iter().map(|&[from, to]| [to, from]).collect();
    reverse_edges.sort_unstable();
    let leaves = dependents
        .iter()
        .filter(|(_, ds)| ds.is_empty())
        .map(|(&job, _)| job)
        .collect();
    Ok(Layout {
        edges,
        reverse_edges,
        roots,
        leaves,
        levels,
    })
}

/// A cycle among the jobs Kahn's algorithm could not place (`waiting_on > 0`). Each of
/// them waits for at least one other unplaced job, so following the smallest such
/// dependency from the smallest unplaced job must come back to a job already seen.
fn find_cycle(deps: &BTreeMap<u32, BTreeSet<u32>>, waiting_on: &BTreeMap<u32, usize>) -> Vec<u32> {
    let unplaced = |job: &u32| waiting_on.get(job).is_some_and(|&n| n > 0);
    let Some(&start) = waiting_on.keys().find(|j| unplaced(j)) else {
        return Vec::new();
    };
    let mut path = vec![start];
    let mut seen_at: BTreeMap<u32, usize> = BTreeMap::from([(start, 0)]);
    let mut current = start;
    while let Some(&next) = deps
        .get(&current)
        .and_then(|ds| ds.iter().find(|d| unplaced(d)))
    {
        if let Some(&at) = seen_at.get(&next) {
            let mut cycle = path.split_off(at);
            cycle.push(next);
            return cycle;
        }
        seen_at.insert(next, path.len());
        path.push(next);
        current = next;
    }
    // Unreachable for input from `layout`; an empty path rather than a panic.
    Vec::new()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn graph(pairs: &[(u32, &[u32])]) -> BTreeMap<u32, Vec<u32>> {
        pairs.iter().map(|(j, d)| (*j, d.to_vec())).collect()
    }

    /// Levels computed another way: a job's level is 0 without dependencies, else one
    /// more than its deepest dependency's (longest path from the roots), by repeated
    /// relaxation until nothing changes.
    fn levels_by_depth(g: &BTreeMap<u32, Vec<u32>>) -> Vec<Vec<u32>> {
        let mut depth: BTreeMap<u32, usize> = g.keys().map(|&j| (j, 0)).collect();
        loop {
            let mut changed = false;
            for (j, ds) in g {
                let want = ds.iter().map(|d| depth[d] + 1).max().unwrap_or(0);
                if depth[j] != want {
                    depth.insert(*j, want);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let height = depth.values().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); height];
        for (j, d) in depth {
            levels[d].push(j);
        }
        levels
    }

    /// Lays out `g` and checks it against `levels_by_depth` and the other lists'
    /// definitions; returns the layout.
    #[track_caller]
    fn check(g: &BTreeMap<u32, Vec<u32>>) -> Layout {
        let l = layout(g).expect("a DAG");
        assert_eq!(l.levels, levels_by_depth(g), "levels");
        let roots: Vec<u32> = g
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(j, _)| *j)
            .collect();
        assert_eq!(l.roots, roots, "roots");
        let leaves: Vec<u32> = g
            .keys()
            .filter(|j| !g.values().any(|d| d.contains(j)))
            .copied()
            .collect();
        assert_eq!(l.leaves, leaves, "leaves");
        let reversed: BTreeSet<[u32; 2]> = l.reverse_edges.iter().map(|&[a, b]| [b, a]).collect();
        assert_eq!(reversed, l.edges.iter().copied().collect(), "reverse edges");
        l
    }

    #[test]
    fn diamond() {
        let l = check(&graph(&[(1, &[]), (2, &[1]), (3, &[1]), (4, &[2, 3])]));
        assert_eq!(l.edges, vec![[1, 2], [1, 3], [2, 4], [3, 4]]);
        assert_eq!(l.reverse_edges, vec![[2, 1], [3, 1], [4, 2], [4, 3]]);
        assert_eq!(l.roots, vec![1]);
        assert_eq!(l.leaves, vec![4]);
        assert_eq!(l.levels, vec![vec![1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn chain_with_a_shortcut_takes_the_longest_path() {
        // 3 depends on 1 directly and through 2: it is on level 2, not 1.
        let l = check(&graph(&[(3, &[1, 2]), (2, &[1]), (1, &[])]));
        assert_eq!(l.levels, vec![vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn long_chain() {
        let g: BTreeMap<u32, Vec<u32>> = (0..5000u32)
            .map(|j| (j, if j == 0 { vec![] } else { vec![j - 1] }))
            .collect();
        let l = check(&g);
        assert_eq!(l.levels.len(), 5000);
        assert_eq!((l.roots, l.leaves), (vec![0], vec![4999]));
    }

    #[test]
    fn wide_fan_out_and_fan_in() {
        let mut g = graph(&[(0, &[])]);
        let middle: Vec<u32> = (1..=100).collect();
        for &m in &middle {
            g.insert(m, vec![0]);
        }
        g.insert(1000, middle.clone());
        let l = check(&g);
        assert_eq!(l.levels, vec![vec![0], middle, vec![1000]]);
        assert_eq!(l.edges.len(), 200);
    }

    #[test]
    fn disconnected_components_and_repeats() {
        let l = check(&graph(&[
            (10, &[]),
            (11, &[10, 10]),
            (20, &[]),
            (30, &[]),
            (31, &[30]),
            (32, &[31]),
        ]));
        assert_eq!(l.roots, vec![10, 20, 30]);
        assert_eq!(l.leaves, vec![11, 20, 32]);
        assert_eq!(l.levels, vec![vec![10, 20, 30], vec![11, 31], vec![32]]);
        assert_eq!(l.edges, vec![[10, 11], [30, 31], [31, 32]]);
    }

    #[test]
    fn empty_graph() {
        assert_eq!(layout(&BTreeMap::new()), Ok(Layout::default()));
    }

    #[test]
    fn self_loop_is_a_cycle_of_one() {
        let g = graph(&[(1, &[]), (4, &[1, 4])]);
        assert_eq!(layout(&g), Err(DagError::Cycle(vec![4, 4])));
    }

    #[test]
    fn long_cycle_names_its_path() {
        // 1 <- 2 <- ... <- 50 <- 1, with a root and a tail hanging off it.
        let mut g: BTreeMap<u32, Vec<u32>> = (1..=50u32).map(|j| (j, vec![j + 1])).collect();
        g.insert(50, vec![1, 100]);
        g.insert(100, vec![]);
        g.insert(200, vec![7]);
        let Err(DagError::Cycle(path)) = layout(&g) else {
            panic!("a cycle");
        };
        let mut want: Vec<u32> = (1..=50).collect();
        want.push(1);
        assert_eq!(path, want);
        assert!(
            DagError::Cycle(path)
                .to_string()
                .starts_with("dependency cycle: 1 -> 2 -> 3")
        );
    }

    #[test]
    fn missing_dependencies_are_all_named_before_cycles() {
        let g = graph(&[(1, &[1]), (2, &[9, 8]), (3, &[9])]);
        let missing = |job, depends_on| MissingDependency { job, depends_on };
        let err = layout(&g).unwrap_err();
        assert_eq!(
            err,
            DagError::MissingDependency(vec![missing(2, 8), missing(2, 9), missing(3, 9)])
        );
        assert_eq!(
            err.to_string(),
            "dependencies outside the flow: job 2 depends on 8, job 2 depends on 9, \
             job 3 depends on 9"
        );
    }

    /// A random DAG: each job depends only on jobs with smaller ids.
    fn dag() -> impl Strategy<Value = BTreeMap<u32, Vec<u32>>> {
        (1usize..40).prop_flat_map(|n| {
            proptest::collection::vec(
                proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                n,
            )
            .prop_map(|picks| {
                picks
                    .into_iter()
                    .enumerate()
                    .map(|(j, ds)| {
                        let deps = if j == 0 {
                            Vec::new()
                        } else {
                            ds.iter().map(|i| i.index(j) as u32 * 3).collect()
                        };
                        (j as u32 * 3, deps)
                    })
                    .collect()
            })
        })
    }

    proptest! {
        #[test]
        fn every_edge_climbs_a_level(g in dag()) {
            let l = check(&g);
            let level: BTreeMap<u32, usize> = l
                .levels
                .iter()
                .enumerate()
                .flat_map(|(i, js)| js.iter().map(move |j| (*j, i)))
                .collect();
            prop_assert_eq!(level.len(), g.len());
            for [from, to] in &l.edges {
                prop_assert!(level[from] < level[to], "{} -> {}", from, to);
            }
        }

        #[test]
        fn a_back_edge_is_always_refused_with_a_real_cycle(
            g in dag(),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            // Make the earlier job depend on a later one that reaches it: pick a
            // dependent chain 'to -> .. -> from' by walking up from `to`.
            let ids: Vec<u32> = g.keys().copied().collect();
            let lower = ids[a.index(ids.len())];
            let mut g = g;
            // The job `upper` depends (transitively) on `lower`; closing the loop makes
            // `lower` depend on `upper`. Without a dependent, `upper` is `lower` itself.
            let upper = g
                .iter()
                .filter(|(_, d)| d.contains(&lower))
                .map(|(j, _)| *j)
                .nth(b.index(ids.len()) % ids.len().max(1))
                .unwrap_or(lower);
            g.get_mut(&lower).expect("in the graph").push(upper);
            let Err(DagError::Cycle(path)) = layout(&g) else {
                return Err(TestCaseError::fail("a cycle was accepted"));
            };
            prop_assert!(path.len() >= 2);
            prop_assert_eq!(path.first(), path.last());
            for pair in path.windows(2) {
                prop_assert!(g[&pair[0]].contains(&pair[1]), "{:?} is no path", path);
            }
        }
    }
}
