"""Tornado's insides and the HTTP standards: the server and its refusals (server), request bodies read in blocks
(body), downloads with sendfile (sendfile), RFC 9110 preconditions and ranges (semantics), RFC 9530 digest fields
(digest_fields), bearer tokens and trusted proxies (access). Every private attribute of Tornado's that the service
relies on is used in this package only, listed in insides.INSIDES and checked when the service starts."""
