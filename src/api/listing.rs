//! A listing read page by page that can stop and go on later: the pages read so far, the
//! next page's URL, and the checks that keep a listing finite (no page URL twice, no page of
//! the same ids twice, at most `MAX_PAGES`).
//!
//! Owns [`Listing`] and the loop that reads its pages ([`Client::read_listing`]). A listing
//! stopped by an error keeps every page it had read and the URL of the one that failed, so
//! that a caller cut short by quota can go on from there at its next poll instead of reading
//! the first pages again (#32 item 4). Does not own sending (`send`), parsing a page
//! (`model`), nor when to go on (the collector).

use std::collections::HashSet;

use url::Url;

use super::model::{self, redact_url};
use super::{
    Client, Error, LIST_TOP, QuotaWait, check_next_page, full_page_continuation, page_digest,
};
use crate::quota::Endpoint;

/// A listing in progress: what its pages served so far and where it goes on.
#[derive(Debug)]
pub struct Listing<T> {
    ep: Endpoint,
    /// The page to read next; `None` once the listing ended.
    next: Option<Url>,
    items: Vec<T>,
    /// Every page's URL, to tell a listing that loops from one that ends.
    seen: HashSet<String>,
    /// The ids each page served, to tell an API that ignores `$skip` (the same items under
    /// new URLs, which no URL check sees) before 200 copies of a page pile up in memory.
    pages: HashSet<u64>,
    read: usize,
}

impl<T> Listing<T> {
    /// A listing of `path` under the client's API with `filter`, nothing read yet.
    pub(super) fn start(client: &Client, ep: Endpoint, path: &str, filter: &str) -> Self {
        let mut url = client.api_url(path);
        url.query_pairs_mut()
            .append_pair("$filter", filter)
            .append_pair("$top", &LIST_TOP.to_string());
        Listing {
            ep,
            seen: HashSet::from([url.to_string()]),
            next: Some(url),
            items: Vec::new(),
            pages: HashSet::new(),
            read: 0,
        }
    }

    /// Every page was read.
    pub fn is_done(&self) -> bool {
        self.next.is_none()
    }

    /// Pages read so far.
    pub fn pages_read(&self) -> usize {
        self.read
    }

    /// Items served so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items of every page read.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

impl Client {
    /// Read `listing`'s pages from where it stopped to its end. On an error the pages read so
    /// far stay in it, and the page that failed is the one read next.
    pub(super) async fn read_listing<T: serde::de::DeserializeOwned + model::Listed>(
        &self,
        listing: &mut Listing<T>,
        wait: QuotaWait,
        item: &str,
        skipped: impl Fn(&[String]),
    ) -> Result<(), Error> {
        let ep = listing.ep;
        while let Some(url) = listing.next.clone() {
            let body = self.api_get(ep, &url, wait, None).await?;
            let (items, invalid, next_link) =
                model::parse_page::<T>(&body, item).map_err(|source| Error::Parse {
                    endpoint: ep.as_str(),
                    url: redact_url(&url),
                    source,
                })?;
            let served = items.len() + invalid.len();
            if !items.is_empty() && !listing.pages.insert(page_digest(&items)) {
                listing.next = None;
                return Err(Error::RepeatedPage {
                    endpoint: ep.as_str(),
                    link: redact_url(&url),
                });
            }
            skipped(&invalid);
            listing.items.extend(items);
            listing.read += 1;
            listing.next = None;
            listing.next = match self.next_page(ep, next_link, &mut listing.seen)? {
                Some(link) => Some(link),
                None => match full_page_continuation(&url, served) {
                    Some(more) => {
                        check_next_page(&mut listing.seen, &more, ep)?;
                        Some(more)
                    }
                    None => None,
                },
            };
        }
        Ok(())
    }
}
