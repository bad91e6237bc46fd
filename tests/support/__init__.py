"""
What the tests share: fakes, clients and test cases.  No test module imports
another test module; they import from here.
"""
