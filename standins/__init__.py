"""Stand-ins for the world outside: the demo, a local MediaWiki, a local image host with
upload.wikimedia.org's rules, and tiny offline translation models.

The demo, the tests and the benchmarks run against them; the pipeline never imports them, and
they are not in the wheel (`make demo` runs from the repository).
"""
