# C-level declarations of nf_adapters._sbi_fast, for the compiled SCP router (_scp_fast),
# which calls the header pass without a Python call per request.

cpdef tuple scan_request(list headers)
cpdef list rewrite_headers(list headers, scheme, authority, path, hops, via)
