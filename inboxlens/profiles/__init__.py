"""Contact profiles: who a correspondent is, from the user's own address books.

Library code, no process of its own (yet): ``vcard`` reads vCards into ``Profile``s, keeping
only what a card shows; ``carddav`` syncs one CardDAV address book (RFC 6352) incrementally
and returns what changed, for the caller to apply in one transaction; ``match`` merges
duplicates into people and finds them by a correspondent's address. docs/profiles.md says
what is built and what is left of issue 17.
"""
