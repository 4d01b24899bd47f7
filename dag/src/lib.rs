//! placeholder: the dag crate lands in the next commit
