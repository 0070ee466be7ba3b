-- 017_book_pending: address book ids whose sealed CardDAV password web is handing to the vault
-- (as `book:<id>`) while the book's row is not committed yet (web/books.py), as
-- connect_pending does for a mailbox's token. A row left behind means web (or the vault, or
-- the database) died between the vault's set and the book's commit: if no book has that id,
-- web's sweep tells the vault to forget the password, so none is kept for a book nobody can
-- see. The add locks its row (FOR UPDATE) until it commits. Book ids come from an identity
-- column and are never reused, so a stale id cannot name a later book.
CREATE TABLE book_pending (
    book_id     bigint PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
