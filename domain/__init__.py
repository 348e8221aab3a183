"""Pure domain logic: no I/O, no clocks, importable from workflow code.

Everything here takes plain values and returns plain values, so it is unit-tested directly and
shared by workflows, activities and the API.
"""
