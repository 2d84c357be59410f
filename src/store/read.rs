//! Reads: materialised views, index lookups, scans, computed `groups`, raw documents.

use super::*;

impl Store {
    /// The live resource `id`, or `None`.
    pub fn get(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
    ) -> Result<Option<Stored>, StoreError> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_VIEWS), keys::resource(tenant, kind, id))?
        else {
            return Ok(None);
        };
        let view: Value = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("view of {id}: {e}")))?;
        Ok(Some(Stored::from_view(view)))
    }

    /// Ids whose indexed `attr` (see [`index_entries`]) has the normalised value of `value`.
    pub fn lookup(
        &self,
        tenant: &str,
        kind: ResourceKind,
        attr: &str,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let norm = normalize_indexed(attr, value);
        let prefix = keys::index_prefix(tenant, kind, attr, &norm);
        self.prefix_keys(CF_INDEX, &prefix)
            .map(|r| r.map(|k| String::from_utf8_lossy(keys::last_part(&k)).into_owned()))
            .collect()
    }

    /// All live views of one type in one tenant, in id order.
    pub fn scan(
        &self,
        tenant: &str,
        kind: ResourceKind,
    ) -> impl Iterator<Item = Result<Value, StoreError>> + '_ {
        let prefix = keys::resource_prefix(tenant, kind);
        self.db
            .iterator_cf(
                self.cf(CF_VIEWS),
                IteratorMode::From(&prefix, Direction::Forward),
            )
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|r| {
                let (_, v) = r?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(format!("view: {e}")))
            })
    }

    /// Live views of one type in one tenant with their ids, from a key on: in id order strictly
    /// after `from` (or from the first), or with `reverse` in descending id order strictly before
    /// `from` (or from the last). What a cursor page reads: one seek, then only the rows it
    /// keeps or filters out, however large the tenant.
    pub fn scan_from<'a>(
        &'a self,
        tenant: &str,
        kind: ResourceKind,
        from: Option<&str>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<(String, Value), StoreError>> + 'a {
        let prefix = keys::resource_prefix(tenant, kind);
        let (start, direction) = match (from, reverse) {
            (Some(id), false) => (keys::resource(tenant, kind, id), Direction::Forward),
            (None, false) => (prefix.clone(), Direction::Forward),
            (Some(id), true) => (keys::resource(tenant, kind, id), Direction::Reverse),
            // Ids are text without 0xFF bytes: this sorts after every id of the prefix.
            (None, true) => ([prefix.as_slice(), &[0xFF]].concat(), Direction::Reverse),
        };
        let exclusive = from.map(|_| start.clone());
        self.db
            .iterator_cf(self.cf(CF_VIEWS), IteratorMode::From(&start, direction))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .filter(move |r| {
                r.as_ref()
                    .map_or(true, |(k, _)| exclusive.as_deref() != Some(&k[..]))
            })
            .map(|r| {
                let (k, v) = r?;
                let id = String::from_utf8_lossy(keys::last_part(&k)).into_owned();
                let view = serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("view of {id}: {e}")))?;
                Ok((id, view))
            })
    }

    /// How many live resources of one type one tenant has: a maintained counter (one read).
    pub fn count(&self, tenant: &str, kind: ResourceKind) -> Result<usize, StoreError> {
        Ok(self.read_count(&keys::resource_count(tenant, kind))?.max(0) as usize)
    }

    /// One page of a tenant's resources of one type in id order: `count` views after skipping
    /// `skip`. Seeks instead of walking the skipped rows: per-bucket counters (ids are
    /// uniformly spread UUIDs, bucketed by their first characters, see [`keys::BUCKET_CHARS`])
    /// find the bucket the page starts in, so only that bucket's earlier rows are stepped over
    /// (a few hundred at a million resources), and only the page is parsed.
    pub fn page(
        &self,
        tenant: &str,
        kind: ResourceKind,
        skip: usize,
        count: usize,
    ) -> Result<Vec<Value>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let prefix = keys::bucket_count_prefix(tenant, kind);
        let mut before = 0usize;
        let mut start_bucket = None;
        for r in self.db.iterator_cf(
            self.cf(CF_COUNTS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            let n = <[u8; 8]>::try_from(&v[..])
                .map_or(0, i64::from_le_bytes)
                .max(0) as usize;
            if before + n > skip {
                start_bucket = Some(k[prefix.len()..].to_vec());
                break;
            }
            before += n;
        }
        let Some(bucket) = start_bucket else {
            return Ok(Vec::new());
        };
        let resource_prefix = keys::resource_prefix(tenant, kind);
        let mut start = resource_prefix.clone();
        start.extend_from_slice(&bucket);
        let mut out = Vec::with_capacity(count.min(1024));
        let mut to_skip = skip - before;
        for r in self.db.iterator_cf(
            self.cf(CF_VIEWS),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&resource_prefix) {
                break;
            }
            if to_skip > 0 {
                to_skip -= 1;
                continue;
            }
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("view: {e}")))?,
            );
            if out.len() >= count {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn prefix_keys<'a>(
        &'a self,
        cf: &str,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<Box<[u8]>, StoreError>> + 'a {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .map(|r| r.map(|(k, _)| k).map_err(StoreError::from))
    }

    /// The groups a user (or group) is a direct member of, as SCIM `groups` values, in group id
    /// order. `base` is the SCIM base URL for `$ref`.
    pub fn groups_of(
        &self,
        tenant: &str,
        member: &str,
        base: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let prefix = keys::member_of_prefix(tenant, member);
        let mut out = Vec::new();
        for key in self.prefix_keys(CF_INDEX, &prefix) {
            let key = key?;
            let group = String::from_utf8_lossy(keys::last_part(&key)).into_owned();
            if let Some(g) = self.get(tenant, ResourceKind::Group, &group)? {
                let mut v = Map::new();
                v.insert("value".into(), Value::String(group.clone()));
                v.insert(
                    "$ref".into(),
                    Value::String(format!("{base}/Groups/{group}")),
                );
                if let Some(d) = g.view.get("displayName") {
                    v.insert("display".into(), d.clone());
                }
                v.insert("type".into(), Value::String("direct".into()));
                out.push(Value::Object(v));
            }
        }
        Ok(out)
    }

    /// Which of `ids` are live users or groups of this tenant (members that point at deleted
    /// resources are never listed).
    pub fn live_ids(&self, tenant: &str, ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        let views = self.cf(CF_VIEWS);
        let user_keys: Vec<_> = ids
            .iter()
            .map(|id| (views, keys::resource(tenant, ResourceKind::User, id)))
            .collect();
        let group_keys: Vec<_> = ids
            .iter()
            .map(|id| (views, keys::resource(tenant, ResourceKind::Group, id)))
            .collect();
        let users = self.db.multi_get_cf(user_keys);
        let groups = self.db.multi_get_cf(group_keys);
        users
            .into_iter()
            .zip(groups)
            .map(|(u, g)| Ok(u?.is_some() || g?.is_some()))
            .collect()
    }

    /// Is there any document (live or tombstone) for this id here?
    pub fn knows(&self, tenant: &str, kind: ResourceKind, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_DOCS), keys::resource(tenant, kind, id))?
            .is_some())
    }

    /// The Automerge document of a resource, live or tombstone (admin history).
    pub fn document(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
    ) -> Result<Option<AutoCommit>, StoreError> {
        let key = keys::resource(tenant, kind, id);
        match self.db.get_pinned_cf(self.cf(CF_DOCS), &key)? {
            Some(bytes) if bytes.as_ref() != COLLECTED => Ok(Some(AutoCommit::load(&bytes)?)),
            _ => Ok(None),
        }
    }
}
