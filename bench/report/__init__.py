"""The reporting side: read a results tree and turn it into tables, statistics, LEADERBOARD.md/.html and plots.

Modules: `collect` (results tree → tidy frame), `aggregate` (summary tables), `leaderboard` (LEADERBOARD.md,
csv, json), `mdtable` (markdown cells), `plots` (PNG figures), `reported` (published numbers and Δ).
"""
