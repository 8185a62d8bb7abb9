"""The demo image's program: every requirement imports and works."""
import markupsafe
import psutil
import rcssmin
import regex
import rjsmin
import six
import sqlparse

assert rcssmin.cssmin("a  {  b : c ; }") == "a{b:c}"
assert rjsmin.jsmin("var  a = 1 ;") == "var a=1;"
assert regex.sub(r"\p{Lu}", "_", "aBc") == "a_c"
assert str(markupsafe.escape("<b>")) == "&lt;b&gt;"
assert psutil.cpu_count() >= 1
print("demo app OK:", six.__name__, sqlparse.__version__)
