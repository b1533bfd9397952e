"""What turns finished runs into knowledge: loading runs from MLflow, hypothesis tests, figures, reports.

Never imports Ray.
"""
