//! Lazy iteration over paged store reads: the streaming forms of the bulk reads hold one
//! page at a time.

use braid_store::Page;

use crate::error::Result;

/// Items of the pages `fetch` returns, one page at a time: `fetch(after)` is called with
/// `None` for the first page and then each page's `next`, only once the previous page's
/// items are used up. A failed fetch, or an item that is an error, is yielded and ends
/// the iteration.
pub(crate) fn paged<T>(
    mut fetch: impl FnMut(Option<String>) -> Result<Page<Result<T>>>,
) -> impl Iterator<Item = Result<T>> {
    let mut items: std::vec::IntoIter<Result<T>> = Vec::new().into_iter();
    // `Some(cursor)` while a page remains to be fetched.
    let mut next: Option<Option<String>> = Some(None);
    let mut ended = false;
    std::iter::from_fn(move || {
        loop {
            if ended {
                return None;
            }
            if let Some(item) = items.next() {
                ended = item.is_err();
                return Some(item);
            }
            let after = next.take()?;
            match fetch(after) {
                Ok(page) => {
                    next = page.next.map(Some);
                    items = page.items.into_iter();
                }
                Err(e) => {
                    ended = true;
                    return Some(Err(e));
                }
            }
        }
    })
}

/// `items`, then — only if they were none at all and none failed — whatever `when_empty`
/// says (an error that explains the emptiness, or nothing).
pub(crate) fn or_explain<T>(
    mut items: impl Iterator<Item = Result<T>>,
    when_empty: impl FnOnce() -> Option<crate::error::Error>,
) -> impl Iterator<Item = Result<T>> {
    let mut seen = false;
    let mut when_empty = Some(when_empty);
    std::iter::from_fn(move || match items.next() {
        Some(item) => {
            seen = true;
            Some(item)
        }
        None if !seen => when_empty.take().and_then(|f| f()).map(Err),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::Cell;

    use super::*;
    use crate::error::Error;

    fn page(items: &[u32], next: Option<&str>) -> Result<Page<Result<u32>>> {
        Ok(Page { items: items.iter().map(|&i| Ok(i)).collect(), next: next.map(str::to_owned) })
    }

    #[test]
    fn pages_are_fetched_one_at_a_time_only_when_the_previous_one_is_used_up() {
        let fetched = Cell::new(0);
        let mut it = paged(|after| {
            fetched.set(fetched.get() + 1);
            match after.as_deref() {
                None => page(&[1, 2], Some("a")),
                Some("a") => page(&[], Some("b")),
                Some("b") => page(&[3], None),
                other => panic!("unexpected cursor {other:?}"),
            }
        });
        assert_eq!(fetched.get(), 0, "nothing is read before the first item is asked for");
        assert_eq!(it.next().unwrap().unwrap(), 1);
        assert_eq!(it.next().unwrap().unwrap(), 2);
        assert_eq!(fetched.get(), 1);
        assert_eq!(it.next().unwrap().unwrap(), 3, "an empty page with a cursor is passed over");
        assert!(it.next().is_none());
        assert!(it.next().is_none());
        assert_eq!(fetched.get(), 3, "nothing is fetched after the last page");
    }

    #[test]
    fn an_error_is_yielded_once_and_ends_the_iteration() {
        let failing = || Error::Runtime { reason: "disk on fire".into() };
        let mut it = paged(|after| match after {
            None => Ok(Page { items: vec![Ok(1), Err(failing()), Ok(2)], next: Some("x".into()) }),
            Some(_) => panic!("no page after an error"),
        });
        assert_eq!(it.next().unwrap().unwrap(), 1);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());

        let mut it = paged::<u32>(|_| Err(failing()));
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn emptiness_is_explained_only_when_nothing_came() {
        let explain = || Some(Error::Runtime { reason: "no such name".into() });
        let empty: Vec<Result<u32>> = or_explain(std::iter::empty(), explain).collect();
        assert!(matches!(empty.as_slice(), [Err(_)]));
        let some: Vec<Result<u32>> = or_explain(vec![Ok(1)].into_iter(), explain).collect();
        assert!(matches!(some.as_slice(), [Ok(1)]));
        let fine: Vec<Result<u32>> = or_explain(std::iter::empty(), || None).collect();
        assert!(fine.is_empty());
    }
}
