"""lymphosort.transfer"""
