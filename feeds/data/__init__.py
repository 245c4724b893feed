"""Sample data made by the project (not vendor data); see make_sample.py."""
