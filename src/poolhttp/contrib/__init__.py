"""Adapters that bring poolhttp to code written for other libraries, and instrumentation.

Each module is an optional extra and imports its library when it is imported itself; this
package imports nothing.
"""
