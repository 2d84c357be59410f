//! Region bookkeeping in `meta`: tokens created on first start and the health probe.

use super::*;

impl Store {
    /// Tokens created by this region (hash → tenant), e.g. the first-start token.
    pub fn stored_tokens(&self) -> Result<HashMap<String, String>, StoreError> {
        let prefix = b"token\0".to_vec();
        let mut out = HashMap::new();
        for r in self
            .db
            .iterator_cf(
                self.cf(CF_META),
                IteratorMode::From(&prefix, Direction::Forward),
            )
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
        {
            let (k, v) = r?;
            out.insert(
                String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        Ok(out)
    }

    /// Keep a token's hash (never the token) for `tenant`.
    pub fn add_token(&self, sha256_hex: &str, tenant: &str) -> Result<(), StoreError> {
        let mut key = b"token\0".to_vec();
        key.extend_from_slice(sha256_hex.as_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key, tenant.as_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }

    /// A real write and read of RocksDB, for `/health`.
    pub fn probe(&self) -> Result<(), StoreError> {
        let value = self.stamp().at;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), b"health-probe", value.as_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        match self.db.get_cf(self.cf(CF_META), b"health-probe")? {
            Some(v) if v == value.as_bytes() => Ok(()),
            _ => Err(StoreError::Corrupt(
                "health probe read back something else".into(),
            )),
        }
    }

    /// Remember a region this one has talked to (its name is kept for good: collection and
    /// truncation wait for every region ever known).
    pub fn remember_region(&self, region: &str) -> Result<(), StoreError> {
        let mut key = b"peer\0".to_vec();
        key.extend_from_slice(region.as_bytes());
        if self.db.get_pinned_cf(self.cf(CF_META), &key)?.is_none() {
            self.db.put_cf(self.cf(CF_META), key, b"")?;
        }
        Ok(())
    }

    /// Every region remembered by [`Store::remember_region`].
    pub fn known_regions(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let prefix = b"peer\0";
        self.prefix_keys(CF_META, prefix)
            .map(|k| k.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned()))
            .collect()
    }
}
