-- 005_dkim_selectors: keep each DKIM-Signature's selector beside its domain.
-- A signature cannot be verified without the body; its d= and s= are kept so a change of
-- signer or key (selector) for a sender domain can be noticed. "domain/selector" each.
ALTER TABLE raw_headers ADD COLUMN dkim_signatures text[] NOT NULL DEFAULT '{}';
