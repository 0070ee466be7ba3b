-- 016_profiles: who a correspondent is (issue 17). docs/profiles.md tells the whole flow.
--
-- A user's address books: CardDAV (synced by harvest, the password sealed in the vault under
-- the key 'book:<id>'), Google's CardDAV on a mail account's own grant (the vault's refresh
-- token serves both), or a .vcf file imported once by web. Removing a book deletes every
-- profile it brought (the cascades below).
CREATE TABLE address_books (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('carddav', 'google', 'vcf')),
    label       text NOT NULL CHECK (length(label) BETWEEN 1 AND 100),
    url         text CHECK (length(url) <= 2048),
    username    text CHECK (length(username) <= 256),
    account_id  bigint REFERENCES mail_accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'vcf') = (url IS NULL)),
    CHECK ((kind = 'carddav') = (username IS NOT NULL)),
    CHECK ((kind = 'google') = (account_id IS NOT NULL))
);
CREATE INDEX address_books_user_id_idx ON address_books (user_id);
CREATE INDEX address_books_account_id_idx ON address_books (account_id) WHERE account_id IS NOT NULL;

-- Harvest's work queue for the synced books, like harvest_state for mailboxes: a lease per
-- book, so one node syncs it at a time; web asks for an early run by moving next_run_at.
-- sync_token and etags are carddav.SyncState; last_error is a message for the owner, never
-- a URL path, an address or a credential.
CREATE TABLE address_book_sync (
    book_id           bigint PRIMARY KEY REFERENCES address_books (id) ON DELETE CASCADE,
    next_run_at       timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    sync_token        text,
    etags             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(etags) = 'object'),
    last_sync_at      timestamptz,
    last_error        text,
    failures          integer NOT NULL DEFAULT 0,
    cards             integer NOT NULL DEFAULT 0
);
CREATE INDEX address_book_sync_due_idx ON address_book_sync (next_run_at);

-- One card of a book, as profiles.vcard keeps it: the fields shown (jsonb: name,
-- organisation, title, links, photo_url), never a note, phone or postal address. A photo
-- is kept here (bounded by the parser) and served by InboxLens, never linked to.
CREATE TABLE profile_cards (
    book_id       bigint NOT NULL REFERENCES address_books (id) ON DELETE CASCADE,
    href          text NOT NULL CHECK (length(href) <= 2048),
    fields        jsonb NOT NULL CHECK (jsonb_typeof(fields) = 'object'),
    photo         bytea CHECK (length(photo) <= 262144),
    photo_type    text CHECK (photo_type IN ('image/jpeg', 'image/png', 'image/gif')),
    refreshed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (book_id, href),
    CHECK ((photo IS NULL) = (photo_type IS NULL))
);

-- The card's addresses, normalised (profiles.match.normalise_address), for the card's lookup.
-- user_id is the book's owner, copied so the lookup is one index scan.
CREATE TABLE profile_addresses (
    book_id  bigint NOT NULL,
    href     text NOT NULL,
    address  text NOT NULL CHECK (address = lower(address)),
    user_id  bigint NOT NULL,
    PRIMARY KEY (book_id, href, address),
    FOREIGN KEY (book_id, href) REFERENCES profile_cards (book_id, href) ON DELETE CASCADE
);
CREATE INDEX profile_addresses_lookup_idx ON profile_addresses (user_id, address);

-- Public profiles: opt-in per mailbox, off by default. Looked up by harvest only, by the
-- SHA-256 of the lower-cased address (the address itself never leaves the machine), only
-- for people. A row per mailbox, so Disconnect or opting out deletes what it brought.
-- found = false caches a miss for as long as a hit.
ALTER TABLE mail_accounts ADD COLUMN public_profiles boolean NOT NULL DEFAULT false;
CREATE TABLE public_profiles (
    account_id    bigint NOT NULL REFERENCES mail_accounts (id) ON DELETE CASCADE,
    address_hash  bytea NOT NULL CHECK (length(address_hash) = 32),
    source        text NOT NULL CHECK (source IN ('gravatar', 'libravatar')),
    found         boolean NOT NULL,
    fields        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(fields) = 'object'),
    photo         bytea CHECK (length(photo) <= 262144),
    photo_type    text CHECK (photo_type IN ('image/jpeg', 'image/png', 'image/gif')),
    fetched_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, address_hash, source),
    CHECK ((photo IS NULL) = (photo_type IS NULL))
);
CREATE INDEX public_profiles_fetched_at_idx ON public_profiles (fetched_at);

-- Bumped in the same transaction as any change to a user's profiles (a sync, an import, a
-- removal, a public lookup, an opt-out): the card keeps a profile until its user's version moves.
CREATE TABLE profile_versions (
    user_id  bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    version  bigint NOT NULL DEFAULT 0
);

-- A public profile's change bumps its mailbox owner's version here, by this trigger, so
-- harvest (which looks them up) never needs to know which user owns a mailbox.
CREATE FUNCTION public_profiles_bump_version() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO profile_versions (user_id, version)
        SELECT user_id, 1 FROM mail_accounts WHERE id = COALESCE(NEW.account_id, OLD.account_id)
    ON CONFLICT (user_id) DO UPDATE SET version = profile_versions.version + 1;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION public_profiles_bump_version() FROM PUBLIC;
CREATE TRIGGER public_profiles_bump_version AFTER INSERT OR UPDATE OR DELETE ON public_profiles
    FOR EACH ROW EXECUTE FUNCTION public_profiles_bump_version();
