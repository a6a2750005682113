# Run by every Python kernel of roost-interpreter at its start
# (IPKernelApp.exec_files): the display formats E2B's code interpreter
# adds to IPython's. A pandas DataFrame shown also gives "e2b/data", its
# columns as lists (the package's result.data), as E2B's does.
def _roost_setup():
    import math
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    def plain(v):
        if hasattr(v, "isoformat"):  # timestamps, dates
            return v.isoformat()
        if hasattr(v, "item"):  # numpy scalars
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    def frame(df):
        return {str(col): [plain(v) for v in values] for col, values in df.to_dict(orient="list").items()}

    shell = get_ipython()
    formatter = DataFormatter(parent=shell.display_formatter)
    formatter.for_type_by_name("pandas.core.frame", "DataFrame", frame)
    shell.display_formatter.formatters["e2b/data"] = formatter


_roost_setup()
del _roost_setup
