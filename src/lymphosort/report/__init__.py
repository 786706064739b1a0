"""lymphosort.report"""
