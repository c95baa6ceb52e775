"""Who may open a tail and what it may ask for: the origin check, bearer tokens and topic rules
(a pattern trie), the access guard on kafkatail's routes, and rate limits."""
