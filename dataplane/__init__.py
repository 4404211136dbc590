"""nfmesh data plane: listeners, the HTTP/2 engine (nghttp2 or h2), SCTP, splicing, pools."""
