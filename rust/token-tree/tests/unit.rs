//! Edge cases and validation errors.
use suffixspec_tree::{accept_greedy_batch, build_verification_batch, merge, TokenTree, TreeError};

fn chain() -> TokenTree {
    // 0 -> 1 -> 2 and a sibling 3 of node 1.
    TokenTree::new(vec![5, 6, 7, 8], vec![-1, 0, 1, 0], Some(vec![0.9, 0.5, 0.4, 0.6])).unwrap()
}

#[test]
fn empty_tree_is_valid_everywhere() {
    let t = TokenTree::new(vec![], vec![], None).unwrap();
    assert!(t.is_empty());
    assert_eq!(t.max_depth(), 0);
    assert!(t.ancestor_mask().into_bits().is_empty());
    assert!(t.ancestor_mask().to_bools().is_empty());
    assert!(t.position_ids(3).unwrap().is_empty());
    assert!(t.children(-1).unwrap().is_empty());
    assert_eq!(t.children_csr().offsets, vec![0, 0]);
    let acceptance = t.accept_greedy(&[42]).unwrap();
    assert!(acceptance.nodes.is_empty());
    assert_eq!(acceptance.bonus, 42);
    assert_eq!(t.prune(4), t);
    assert!(merge([&t, &t]).is_empty());
    let batch = build_verification_batch(&[&t, &t], &[3, 9], &[1, 2]).unwrap();
    assert_eq!(batch.width, 1);
    assert_eq!(batch.token_ids, vec![1, 2]);
    assert_eq!(batch.position_ids, vec![3, 9]);
    assert_eq!(batch.mask, vec![true, true]);
    assert_eq!(batch.lengths, vec![1, 1]);
}

#[test]
fn empty_batch_has_width_one() {
    let batch = build_verification_batch(&[], &[], &[]).unwrap();
    assert_eq!((batch.batch, batch.width), (0, 1));
    assert!(batch.token_ids.is_empty() && batch.mask.is_empty() && batch.lengths.is_empty());
}

#[test]
fn default_probs_are_one() {
    assert_eq!(TokenTree::new(vec![1, 2], vec![-1, -1], None).unwrap().probs(), &[1.0, 1.0]);
}

#[test]
fn validation_errors_name_the_problem() {
    let err = |tokens: Vec<i32>, parents: Vec<i32>, probs: Option<Vec<f64>>| {
        TokenTree::new(tokens, parents, probs).unwrap_err()
    };
    assert_eq!(
        err(vec![1, 2], vec![-1], None),
        TreeError::LengthMismatch { what: "parents", expected: 2, got: 1 }
    );
    assert_eq!(
        err(vec![1], vec![-1], Some(vec![0.5, 0.5])),
        TreeError::LengthMismatch { what: "probs", expected: 1, got: 2 }
    );
    assert_eq!(err(vec![1, 2], vec![-1, 1], None), TreeError::InvalidParent { index: 1, parent: 1 });
    assert_eq!(err(vec![1, 2], vec![-1, 5], None), TreeError::InvalidParent { index: 1, parent: 5 });
    assert_eq!(err(vec![1], vec![-2], None), TreeError::InvalidParent { index: 0, parent: -2 });
    assert_eq!(err(vec![1, -3], vec![-1, 0], None), TreeError::InvalidToken { index: 1, token: -3 });
    assert!(matches!(err(vec![1], vec![-1], Some(vec![f64::NAN])), TreeError::InvalidProb { index: 0, .. }));
    assert!(matches!(err(vec![1], vec![-1], Some(vec![1.5])), TreeError::InvalidProb { index: 0, .. }));
    assert!(matches!(err(vec![1], vec![-1], Some(vec![-0.1])), TreeError::InvalidProb { index: 0, .. }));
    assert!(matches!(
        err(vec![1], vec![-1], Some(vec![f64::INFINITY])),
        TreeError::InvalidProb { index: 0, .. }
    ));
}

#[test]
fn query_errors() {
    let t = chain();
    assert_eq!(t.children(4), Err(TreeError::NodeOutOfRange { node: 4, len: 4 }));
    assert_eq!(t.children(-2), Err(TreeError::NodeOutOfRange { node: -2, len: 4 }));
    assert_eq!(t.path_to(-1), Err(TreeError::NodeOutOfRange { node: -1, len: 4 }));
    assert!(matches!(t.position_ids(-1), Err(TreeError::InvalidParameter { name: "prefix_len", .. })));
    assert!(matches!(t.position_ids(i64::MAX), Err(TreeError::InvalidParameter { .. })));
    assert_eq!(
        t.accept_greedy(&[5, 6]),
        Err(TreeError::LengthMismatch { what: "target_ids", expected: 5, got: 2 })
    );
    assert_eq!(t.accept_greedy(&[5, 6, 7, 8, -1]), Err(TreeError::InvalidToken { index: 4, token: -1 }));
}

#[test]
fn batch_errors() {
    let t = chain();
    assert!(matches!(
        build_verification_batch(&[&t], &[1, 2], &[0]),
        Err(TreeError::LengthMismatch { what: "prefix_lens", .. })
    ));
    assert!(matches!(
        build_verification_batch(&[&t], &[1], &[]),
        Err(TreeError::LengthMismatch { what: "root_token_ids", .. })
    ));
    assert!(matches!(build_verification_batch(&[&t], &[-1], &[0]), Err(TreeError::InvalidParameter { .. })));
    assert!(matches!(build_verification_batch(&[&t], &[0], &[-4]), Err(TreeError::InvalidToken { .. })));
    assert!(matches!(
        accept_greedy_batch(&[&t], &[0; 4], 4),
        Err(TreeError::LengthMismatch { what: "target_ids rows", expected: 5, got: 4 })
    ));
    assert!(matches!(
        accept_greedy_batch(&[&t, &t], &[0; 5], 5),
        Err(TreeError::LengthMismatch { what: "target_ids", .. })
    ));
}

#[test]
fn small_example_end_to_end() {
    let t = chain();
    assert_eq!(t.depths(), &[1, 2, 3, 2]);
    assert_eq!(t.position_ids(10).unwrap(), vec![11, 12, 13, 12]);
    assert_eq!(t.path_to(2).unwrap(), vec![0, 1, 2]);
    assert_eq!(t.children(0).unwrap(), vec![1, 3]);
    // Model says 5 after the root, 8 after node 0, 9 after node 3: accepts 0 and 3, bonus 9.
    let acceptance = t.accept_greedy(&[5, 8, 0, 0, 9]).unwrap();
    assert_eq!((acceptance.nodes, acceptance.bonus), (vec![0, 3], 9));
    // Budget 2: node 0 (0.9) then node 3 (0.6) beats node 1 (0.5).
    let pruned = t.prune(2);
    assert_eq!((pruned.tokens(), pruned.parents()), (&[5, 8][..], &[-1, 0][..]));
    // A child more probable than its parent never outranks it.
    let inverted = TokenTree::new(vec![1, 2, 3], vec![-1, 0, -1], Some(vec![0.2, 1.0, 0.5])).unwrap();
    assert_eq!(inverted.prune_selection(1), vec![2]);
    assert_eq!(inverted.prune_selection(2), vec![0, 2]);
}

#[test]
fn merge_folds_shared_prefixes() {
    let a = TokenTree::new(vec![1, 2, 3], vec![-1, 0, 1], Some(vec![0.5, 0.4, 0.3])).unwrap();
    let b = TokenTree::new(vec![1, 2, 4], vec![-1, 0, 1], Some(vec![0.7, 0.1, 0.1])).unwrap();
    let m = merge([&a, &b]);
    assert_eq!(m.tokens(), &[1, 2, 3, 4]);
    assert_eq!(m.parents(), &[-1, 0, 1, 1]);
    assert_eq!(m.probs(), &[0.7, 0.4, 0.3, 0.1]);
    let twins = TokenTree::new(vec![1, 1], vec![-1, -1], None).unwrap();
    assert_eq!(twins.dedup().tokens(), &[1]);
}
