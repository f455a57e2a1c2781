"""Benchmarks behind the commands: ``throughput`` (atp_bench), ``query`` (atp_bench_query),
``admin`` (atp_admin_bench). Not used by ATP at run time.
"""
