"""The CNI exec protocol, shared by every program: the environment and stdin of one
request, the spec's version rules, bounded JSON decoding, result types, the log, and the
dispatcher that turns a request into exactly one JSON answer and exit status."""
