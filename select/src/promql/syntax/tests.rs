//! The errors of refused queries, placed and worded as Prometheus 2.42
//! places and words them. Each expectation below is the `error` that
//! Prometheus 2.42 answered to `/api/v1/query` for the query (without its
//! `invalid parameter "query": ` opening); `tests/query_errors.rs` asks a
//! live Prometheus for a sample of them.

use super::check::first_error;
use super::{ParseError, line_column, parse};

/// What the walk reports for `query`, formatted as `parse` formats it.
fn located(query: &str) -> String {
    let found = first_error(query).unwrap_or_else(|| panic!("no error found in {query:?}"));
    ParseError {
        position: Some(line_column(query, found.position)),
        message: found.message,
    }
    .to_string()
}

#[test]
fn errors_are_placed_and_worded_as_prometheus() {
    let mut wrong = Vec::new();
    let mut check = |query: &str, want: &str| {
        let got = located(query);
        if got != want {
            wrong.push(format!("{query:?}\n   got: {got}\n  want: {want}"));
        }
    };
    check(
        "foo(up)",
        "1:1: parse error: unknown function with name \"foo\"",
    );
    check(
        "sum(rate(up[5m])",
        "1:17: parse error: unclosed left parenthesis",
    );
    check("up)", "1:4: parse error: unexpected right parenthesis ')'");
    check(
        "rate(up[5x])",
        "1:9: parse error: bad duration syntax: \"5\"",
    );
    check("rate(up[5m", "1:11: parse error: unclosed left parenthesis");
    check("1 +", "1:4: parse error: unexpected end of input");
    check("sum(", "1:5: parse error: unclosed left parenthesis");
    check("up $ 1", "1:4: parse error: unexpected character: '$'");
    check(
        "up{a=\"b\"",
        "1:9: parse error: unexpected end of input inside braces",
    );
    check(
        "rate(up)",
        "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector",
    );
    check(
        "rate(up[5m], 1)",
        "1:1: parse error: expected 1 argument(s) in call to \"rate\", got 2",
    );
    check(
        "time(1)",
        "1:1: parse error: expected 0 argument(s) in call to \"time\", got 1",
    );
    check(
        "up @ foo",
        "1:6: parse error: unexpected identifier \"foo\" in @, expected timestamp",
    );
    check(
        "up @ \"x\"",
        "1:6: parse error: unexpected string \"\\\"x\\\"\" in @, expected timestamp",
    );
    check(
        "\"abc\" + 1",
        "1:1: parse error: binary expression must contain only scalar and instant vector types",
    );
    check(
        "abs(\"x\")",
        "1:5: parse error: expected type instant vector in call to function \"abs\", got string",
    );
    check(
        "sum(up) by (",
        "1:13: parse error: unclosed left parenthesis",
    );
    check(
        "up offset",
        "1:10: parse error: unexpected end of input in offset, expected duration",
    );
    check(
        "up[5m] + 1",
        "1:1: parse error: binary expression must contain only scalar and instant vector types",
    );
    check("1 + ", "1:5: parse error: unexpected end of input");
    check(
        " foo(up)",
        "1:2: parse error: unknown function with name \"foo\"",
    );
    check(
        "up == bool 1 and",
        "1:17: parse error: unexpected end of input",
    );
    check(
        "histogram_quantile(0.9)",
        "1:1: parse error: expected 2 argument(s) in call to \"histogram_quantile\", got 1",
    );
    check(
        "label_replace(up, \"a\", \"b\", \"c\")",
        "1:1: parse error: expected 5 argument(s) in call to \"label_replace\", got 4",
    );
    check(
        "up[5m:1x]",
        "1:7: parse error: bad number or duration syntax: \"1\"",
    );
    check(
        "{}",
        "1:1: parse error: vector selector must contain at least one non-empty matcher",
    );
    check(
        "\"unterminated",
        "1:1: parse error: unterminated quoted string",
    );
    check("`abc", "1:1: parse error: unterminated raw string");
    check(
        "sum by (a) (up) without (b)",
        "1:17: parse error: unexpected <without>",
    );
    check(
        "up[0s]",
        "1:4: parse error: duration must be greater than 0",
    );
    check(
        "# comment",
        "1:1: parse error: no expression found in input",
    );
    check(
        "sum(\n  rate(up[5m])\n  + \n)",
        "4:1: parse error: unexpected \")\" in aggregation",
    );
    check(
        "up\n  + foo(up)",
        "2:5: parse error: unknown function with name \"foo\"",
    );
    check(
        "rate(\n up[5m],\n \"x\")",
        "1:1: parse error: expected 1 argument(s) in call to \"rate\", got 2",
    );
    check(
        "up\n* on(a) group_left\n  (",
        "3:4: parse error: unclosed left parenthesis",
    );
    check("1 + ", "1:5: parse error: unexpected end of input");
    check("ü + $", "1:1: parse error: unexpected character: 'ü'");
    check("sum(up) ü", "1:9: parse error: unexpected character: 'ü'");
    check("", "1:1: parse error: no expression found in input");
    check("up[5m", "1:6: parse error: unclosed left bracket");
    check(
        "up[]",
        "1:4: parse error: missing unit character in duration",
    );
    check(
        "up[5m:1]",
        "1:7: parse error: unexpected number \"1\" in subquery selector, expected duration or \"]\"",
    );
    check("up[5m::]", "1:7: parse error: unexpected colon ':'");
    check(
        "up offset 0s",
        "1:11: parse error: duration must be greater than 0",
    );
    check(
        "up[1hs]",
        "1:4: parse error: not a valid duration string: \"1hs\"",
    );
    check(
        "up[1m1h]",
        "1:4: parse error: not a valid duration string: \"1m1h\"",
    );
    check(
        "up[0s:1m]",
        "1:4: parse error: duration must be greater than 0",
    );
    check(
        "up offset -x",
        "1:12: parse error: unexpected identifier \"x\" in offset, expected duration",
    );
    check(
        "up offset 5m offset 1m",
        "1:1: parse error: offset may not be set multiple times",
    );
    check("sum 1", "1:5: parse error: unexpected number \"1\"");
    check(
        "sum by (a) up",
        "1:12: parse error: unexpected identifier \"up\" in aggregation",
    );
    check(
        "sum(up) by (a b)",
        "1:15: parse error: unexpected identifier \"b\" in grouping opts, expected \",\" or \")\"",
    );
    check(
        "sum(up) by (a,",
        "1:15: parse error: unclosed left parenthesis",
    );
    check(
        "sum(up) by a",
        "1:12: parse error: unexpected identifier \"a\" in grouping opts, expected \"(\"",
    );
    check(
        "sum(up +)",
        "1:9: parse error: unexpected \")\" in aggregation",
    );
    check(
        "up * on",
        "1:8: parse error: unexpected end of input in grouping opts, expected \"(\"",
    );
    check(
        "up * on(a) group_left(a) up",
        "1:4: parse error: label \"a\" must not occur in ON and GROUP clause at once",
    );
    check(
        "1 < 2",
        "1:3: parse error: comparisons between scalars must use BOOL modifier",
    );
    check(
        "1 and 2",
        "1:1: parse error: set operator \"and\" not allowed in binary scalar expression",
    );
    check(
        "up + bool 1",
        "1:4: parse error: bool modifier can only be used on comparison operators",
    );
    check(
        "foo{__name__=\"bar\"}",
        "1:1: parse error: metric name must not be set twice: \"foo\" or \"bar\"",
    );
    check(
        "{a=\"b\" c=\"d\"}",
        "1:8: parse error: unexpected identifier \"c\" in label matching, expected \",\" or \"}\"",
    );
    check(
        "{a}",
        "1:3: parse error: unexpected \"}\" in label matching, expected label matching operator",
    );
    check(
        "{a=}",
        "1:4: parse error: unexpected \"}\" in label matching, expected string",
    );
    check(
        "{=}",
        "1:2: parse error: unexpected \"=\" in label matching, expected identifier or \"}\"",
    );
    check(
        "rate(up[5m],)",
        "1:12: parse error: trailing commas not allowed in function call args",
    );
    check(
        "topk(\"x\", up)",
        "1:6: parse error: expected type scalar in aggregation parameter, got string",
    );
    check(
        "count_values(1, up)",
        "1:14: parse error: expected type string in aggregation parameter, got scalar",
    );
    check(
        "sum()",
        "1:1: parse error: no arguments for aggregate expression provided",
    );
    check(
        "topk(up)",
        "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1",
    );
    check(
        "sum(up[5m])",
        "1:5: parse error: expected type instant vector in aggregation expression, got range vector",
    );
    check(
        "-\"a\"",
        "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"string\"",
    );
    check(
        "-up[5m]",
        "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"range vector\"",
    );
    check(
        "(up)[5m]",
        "1:5: parse error: ranges only allowed for vector selectors",
    );
    check(
        "rate(up[5m])[5m]",
        "1:13: parse error: ranges only allowed for vector selectors",
    );
    check(
        "\"a\"[5m:1m]",
        "1:1: parse error: subquery is only allowed on instant vector, got string instead",
    );
    check(
        "up @ 1 @ 2",
        "1:1: parse error: @ <timestamp> may not be set multiple times",
    );
    check(
        "up @ start(",
        "1:12: parse error: unclosed left parenthesis",
    );
    check(
        "sum(up) @ 1 offset",
        "1:1: parse error: @ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
    );
    check(
        "1e",
        "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"1e\": invalid syntax",
    );
    check(
        "0x",
        "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"0x\": invalid syntax",
    );
    check(
        "\"\\q\"",
        "1:1: parse error: unknown escape sequence U+0071 'q'",
    );
    check(
        "'a\\xZZ'",
        "1:1: parse error: illegal character U+005A 'Z' in escape sequence",
    );
    check(
        "up{a=\"\\q\"}",
        "1:6: parse error: unknown escape sequence U+0071 'q'",
    );
    check(
        "foo(bar(up))",
        "1:5: parse error: unknown function with name \"bar\"",
    );
    check(
        "abs(up, 1)",
        "1:1: parse error: expected 1 argument(s) in call to \"abs\", got 2",
    );
    check(
        "round()",
        "1:1: parse error: expected at least 1 argument(s) in call to \"round\", got 0",
    );
    check(
        "label_join(up)",
        "1:1: parse error: expected at least 3 argument(s) in call to \"label_join\", got 1",
    );
    check(
        "sort_desc(up[5m])",
        "1:11: parse error: expected type instant vector in call to function \"sort_desc\", got range vector",
    );
    check(
        "up[5m] offset 1m offset 2m",
        "1:1: parse error: offset may not be set multiple times",
    );
    check("a:b(up)", "1:4: parse error: unexpected \"(\"");
    check("sum:x(up)", "1:6: parse error: unexpected \"(\"");
    check("up ==", "1:6: parse error: unexpected end of input");
    check(
        "up and on(a) group_left up",
        "1:1: parse error: no grouping allowed for \"and\" operation",
    );
    check(
        "up or 1",
        "1:1: parse error: set operator \"or\" not allowed in binary scalar expression",
    );
    check(
        "{__name__=~\"a|\"}",
        "1:1: parse error: vector selector must contain at least one non-empty matcher",
    );
    check(
        "time() == time()",
        "1:8: parse error: comparisons between scalars must use BOOL modifier",
    );
    check(
        "absent_over_time(up)",
        "1:18: parse error: expected type range vector in call to function \"absent_over_time\", got instant vector",
    );
    check(
        "up{a=\"b\"}{c=\"d\"}",
        "1:10: parse error: unexpected \"{\"",
    );
    check("up)(", "1:4: parse error: unexpected right parenthesis ')'");
    check("(((", "1:4: parse error: unclosed left parenthesis");
    check(
        "up{",
        "1:4: parse error: unexpected end of input inside braces",
    );
    check(
        "!up",
        "1:1: parse error: unexpected character after '!': 'u'",
    );
    check(
        "up =~ \"a\"",
        "1:4: parse error: unexpected character after '=': '~'",
    );
    check(
        "up ! 1",
        "1:4: parse error: unexpected character after '!': ' '",
    );
    check("up . 1", "1:4: parse error: unexpected character: '.'");
    check(".5 + .", "1:6: parse error: unexpected character: '.'");
    check(
        "sum(\n  rate(foo[5m])\n)\n  + bar(up)",
        "4:5: parse error: unknown function with name \"bar\"",
    );
    check(
        "up[5m:1m 1]",
        "1:10: parse error: unexpected number \"1\" in subquery selector, expected \"]\"",
    );
    check(
        "up[5m 1]",
        "1:7: parse error: unexpected number \"1\" in subquery or range, expected \":\" or \"]\"",
    );
    check("up[5m:1m", "1:9: parse error: unclosed left bracket");
    check(
        "sum by (a:b) (up)",
        "1:9: parse error: unexpected metric identifier \"a:b\" in grouping opts, expected label",
    );
    check(
        "sum by (inf) (up)",
        "1:9: parse error: unexpected number \"inf\" in grouping opts, expected label",
    );
    check(
        "sum by (,) (up)",
        "1:9: parse error: unexpected \",\" in grouping opts, expected label",
    );
    check(
        "up * on(a) group_left )",
        "1:24: parse error: unexpected right parenthesis ')'",
    );
    check(
        "up * on(a) group_left (b) )",
        "1:28: parse error: unexpected right parenthesis ')'",
    );
    check(
        "up * on(a) group_left",
        "1:22: parse error: unexpected end of input in grouping opts, expected \"(\"",
    );
    check(
        "up * ignoring",
        "1:14: parse error: unexpected end of input in grouping opts, expected \"(\"",
    );
    check(
        "up + on(a) 1",
        "1:1: parse error: vector matching only allowed between instant vectors",
    );
    check("rate(,)", "1:6: parse error: unexpected \",\"");
    check(
        "sum(up,)",
        "1:7: parse error: trailing commas not allowed in function call args",
    );
    check(
        "up @ start() offset 1m [5m]",
        "1:24: parse error: no offset modifiers allowed before range",
    );
    check(
        "up @ 1 [5m]",
        "1:8: parse error: no @ modifiers allowed before range",
    );
    check(
        "up offset 1m [5m]",
        "1:14: parse error: no offset modifiers allowed before range",
    );
    check(
        "up @ Inf",
        "1:1: parse error: timestamp out of bounds for @ modifier: +Inf",
    );
    check(
        "up @ 1e20",
        "1:1: parse error: timestamp out of bounds for @ modifier: 100000000000000000000.000000",
    );
    check(
        "up @ start",
        "1:11: parse error: unexpected end of input in @, expected timestamp",
    );
    check(
        "(up) offset 5m",
        "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
    );
    check(
        "(up) @ 5",
        "1:1: parse error: @ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
    );
    check(
        "\"abc\" offset 5m",
        "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
    );
    check("1 + 2 +", "1:8: parse error: unexpected end of input");
    check("bool", "1:1: parse error: unexpected <bool>");
    check("on(a)", "1:1: parse error: unexpected <on>");
    check("start()", "1:6: parse error: unexpected \"(\"");
    check(
        "up offset 5",
        "1:11: parse error: unexpected number \"5\" in offset, expected duration",
    );
    check(
        "up offset 5m[1m]",
        "1:13: parse error: no offset modifiers allowed before range",
    );
    check(
        "up{a=\"b\"} offset 1m offset 1m",
        "1:1: parse error: offset may not be set multiple times",
    );
    check(
        "{a=\"b\"",
        "1:7: parse error: unexpected end of input inside braces",
    );
    check(
        "{a=\"b\",,}",
        "1:8: parse error: unexpected \",\" in label matching, expected identifier or \"}\"",
    );
    check(
        "{a=~\"x\"",
        "1:8: parse error: unexpected end of input inside braces",
    );
    check("{a=\"b\"} = 1", "1:9: parse error: unexpected \"=\"");
    check("up == == 1", "1:7: parse error: unexpected <op:==>");
    check("up ^ ^ 1", "1:6: parse error: unexpected <op:^>");
    check(
        "sum(up) without",
        "1:16: parse error: unexpected end of input in grouping opts, expected \"(\"",
    );
    check(
        "count_values(\"a\")",
        "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1",
    );
    check(
        "quantile(0.5)",
        "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1",
    );
    check(
        "topk(1, up, 2)",
        "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 3",
    );
    check(
        "sum(up, 1)",
        "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 1, got 2",
    );
    check(
        "vector(\"a\")",
        "1:8: parse error: expected type scalar in call to function \"vector\", got string",
    );
    check(
        "scalar(up[5m])",
        "1:8: parse error: expected type instant vector in call to function \"scalar\", got range vector",
    );
    check(
        "time() + \"a\"",
        "1:10: parse error: binary expression must contain only scalar and instant vector types",
    );
    check(
        "up + \"a\"",
        "1:6: parse error: binary expression must contain only scalar and instant vector types",
    );
    check(
        "up[5m] + up",
        "1:1: parse error: binary expression must contain only scalar and instant vector types",
    );
    check(
        "sum(up) by (a) by (b)",
        "1:16: parse error: unexpected <by>",
    );
    check(
        "sum without (a) (up) by (b)",
        "1:22: parse error: unexpected <by>",
    );
    check(
        "1 == bool 1 + foo(up)",
        "1:15: parse error: unknown function with name \"foo\"",
    );
    check(
        "foo(up) + bar(up)",
        "1:1: parse error: unknown function with name \"foo\"",
    );
    check(
        "bar(up) $",
        "1:1: parse error: unknown function with name \"bar\"",
    );
    check(
        "sum(bar(up)",
        "1:5: parse error: unknown function with name \"bar\"",
    );
    check(
        "up{a=\"b\"} $",
        "1:11: parse error: unexpected character: '$'",
    );
    check(
        "'a\\u12'",
        "1:1: parse error: illegal character U+0027 ''' in escape sequence",
    );
    check(
        "\"a\\400\"",
        "1:1: parse error: escape sequence is an invalid Unicode code point",
    );
    check("\"a\\", "1:1: parse error: escape sequence not terminated");
    check(
        "\"line\n2\"",
        "1:1: parse error: unterminated quoted string",
    );
    check("`raw", "1:1: parse error: unterminated raw string");
    check(
        "up * on(a) group_left ,",
        "1:23: parse error: unexpected \",\" in grouping opts, expected \"(\"",
    );
    check("sum(up) 1", "1:9: parse error: unexpected number \"1\"");
    check(
        "sum(up) by (a) 1",
        "1:16: parse error: unexpected number \"1\"",
    );
    check("rate(up) 1", "1:10: parse error: unexpected number \"1\"");
    check("up 1", "1:4: parse error: unexpected number \"1\"");
    check(
        "up{a=\"b\"} 1",
        "1:11: parse error: unexpected number \"1\"",
    );
    check("(up 1)", "1:5: parse error: unexpected number \"1\"");
    check("up[5m] 1", "1:8: parse error: unexpected number \"1\"");
    check("up[5m:] 1", "1:9: parse error: unexpected number \"1\"");
    check(
        "up offset 5m 1",
        "1:14: parse error: unexpected number \"1\"",
    );
    check("up @ 5 1", "1:8: parse error: unexpected number \"1\"");
    check(
        "up @ start() 1",
        "1:14: parse error: unexpected number \"1\"",
    );
    check(
        "up @ start 1",
        "1:12: parse error: unexpected number \"1\" in @, expected timestamp",
    );
    check(
        "up[5m:1m]]",
        "1:10: parse error: unexpected right bracket ']'",
    );
    check("up[5m:", "1:7: parse error: unclosed left bracket");
    check("-", "1:2: parse error: unexpected end of input");
    check("sum(up) by (a) (up)", "1:16: parse error: unexpected \"(\"");
    check("topk(1,", "1:8: parse error: unclosed left parenthesis");
    check("up * bool", "1:10: parse error: unexpected end of input");
    check(
        "up * bool on(a)",
        "1:16: parse error: unexpected end of input",
    );
    check(
        "up and bool on(a) up",
        "1:4: parse error: bool modifier can only be used on comparison operators",
    );
    check(
        "sum by (a) ",
        "1:12: parse error: unexpected end of input in aggregation",
    );
    check(
        "sum by (a) (",
        "1:13: parse error: unclosed left parenthesis",
    );
    check(
        "up{a=\"b\", c=\"d\"",
        "1:16: parse error: unexpected end of input inside braces",
    );
    check(
        "up{a=\"b\" # c",
        "1:13: parse error: unexpected end of input inside braces",
    );
    check(
        "up * on (a) group_left (b) 1",
        "1:1: parse error: vector matching only allowed between instant vectors",
    );
    check("  ", "1:1: parse error: no expression found in input");
    check(
        "up offset 1m @ 5 offset 1m",
        "1:1: parse error: offset may not be set multiple times",
    );
    check(
        "{a=\"b\"}[5m] offset 1m offset 1m",
        "1:1: parse error: offset may not be set multiple times",
    );
    check(
        "up[5m:0s]",
        "1:7: parse error: duration must be greater than 0",
    );
    check(
        "1_000",
        "1:1: parse error: bad number or duration syntax: \"1\"",
    );
    check(
        "1e400",
        "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"1e400\": value out of range",
    );
    check("up offset 300y", "1:11: parse error: duration out of range");
    check(
        "up offset 3000000y",
        "1:11: parse error: duration out of range",
    );
    check(
        "sum(up) # c\n+ on(a) 1",
        "1:1: parse error: vector matching only allowed between instant vectors",
    );
    check("up and", "1:7: parse error: unexpected end of input");
    check(
        "up[5m][5m]",
        "1:7: parse error: ranges only allowed for vector selectors",
    );
    check(
        "up{a=\"b\"}[5m:] offset 5m offset 1m",
        "1:1: parse error: offset may not be set multiple times",
    );
    check(
        "topk(1, up) by (a) by (b)",
        "1:20: parse error: unexpected <by>",
    );
    check(
        "rate(foo[5m] offset 1m)[1m]",
        "1:24: parse error: ranges only allowed for vector selectors",
    );
    check(
        "\"a\" < \"b\"",
        "1:1: parse error: binary expression must contain only scalar and instant vector types",
    );
    check(
        "up < \"b\"",
        "1:6: parse error: binary expression must contain only scalar and instant vector types",
    );
    check(
        "abs(time() < 1)",
        "1:12: parse error: comparisons between scalars must use BOOL modifier",
    );
    check(
        "label_join(up, \"a\", \",\", \"b\", 1)",
        "1:31: parse error: expected type string in call to function \"label_join\", got scalar",
    );
    check(
        "round(up, 1, 2)",
        "1:1: parse error: expected at most 2 argument(s) in call to \"round\", got 3",
    );
    check(
        "sum by (without) (up)",
        "1:9: parse error: unexpected <without> in grouping opts, expected label",
    );
    check(
        "up{a=~\"x\", b!~\"y\"} unless on(a) group_right up",
        "1:1: parse error: no grouping allowed for \"unless\" operation",
    );
    check(
        "\"a\\'\"",
        "1:1: parse error: unknown escape sequence U+0027 '''",
    );
    check(
        "up == bool 1 and 2",
        "1:1: parse error: set operator \"and\" not allowed in binary scalar expression",
    );
    // A comma that no argument can follow is a trailing one, `)` or not.
    check(
        "label_join(up,, \"job\", \"\", \"job\", \"instance\")",
        "1:14: parse error: trailing commas not allowed in function call args",
    );
    check(
        "topk(3,  ignoring up) by (job)",
        "1:7: parse error: trailing commas not allowed in function call args",
    );
    check(
        "predict_linear(node_memory_MemFree_bytes[1m], 5m  3600)",
        "1:45: parse error: trailing commas not allowed in function call args",
    );
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Regex errors are placed as in Prometheus (at the matcher), but worded by
/// the regex library, which is not Go's (Prometheus: "error parsing regexp:
/// missing closing ): `^(?:()$`").
#[test]
fn regex_errors_point_at_the_matcher() {
    let check = |query: &str, want: &str| assert_eq!(located(query), want, "{query}");
    check(
        "{a=~\"(\"}",
        "1:2: parse error: error parsing regexp: unclosed group",
    );
    check(
        "up{a!~\"(\" }",
        "1:4: parse error: error parsing regexp: unclosed group",
    );
}

#[test]
fn queries_prometheus_accepts_have_no_error() {
    for query in [
        "up",
        "sum by (a) (rate(up[5m])) / on(a) group_left(b) max(x)",
        "up[5m x]",
        "up @ start() [5m]",
        "0x1f + 017",
        "up offset 1y2w3d4h5m6s7ms",
        "sum by (sum, avg, group_left) (up)",
        "{__name__=\"a\", __name__=\"b\"}",
        "'\\a\\b\\f\\n\\r\\t\\v\\\\\\'\\x41\\101\\u0041\\U00000041'",
        "holt_winters(up[5m], 0.5, 0.5)",
        "up * on(a) group_left by",
        "-sum + by + start + inf",
        "up[5m:] @ end() offset -5m",
    ] {
        assert_eq!(first_error(query), None, "{query}");
    }
}

#[test]
fn line_and_column_count_bytes_after_the_last_newline() {
    let check = |query: &str, position: usize, want: (usize, usize)| {
        assert_eq!(
            line_column(query, position),
            want,
            "{query:?} at {position}"
        );
    };
    check("", 0, (1, 1));
    check("1 +", 3, (1, 4));
    check("a\nbc", 2, (2, 1));
    check("a\nbc", 4, (2, 3));
    check("ü + $", 5, (1, 6));
}

#[test]
fn parse_places_the_parsers_refusals() {
    let check = |query: &str, want: &str| {
        let got = parse(query).expect_err(query).to_string();
        assert_eq!(got, want, "{query}");
    };
    check("1 +", "1:4: parse error: unexpected end of input");
    check(
        "sum by (a) (up) without (b)",
        "1:17: parse error: unexpected <without>",
    );
    check(
        "up\n  + foo(up)",
        "2:5: parse error: unknown function with name \"foo\"",
    );
    check(
        "rate(up)",
        "1:6: parse error: expected type range vector in call to function \"rate\", got instant \
         vector",
    );
}

/// Where the walk finds nothing the parser's own message stands, unplaced.
#[test]
fn parse_keeps_an_unplaced_message_when_the_walk_finds_nothing() {
    let err = parse("up[5m x]").expect_err("the parser refuses a letter in a range");
    assert_eq!(err.position, None);
    assert_eq!(err.to_string(), format!("parse error: {}", err.message));
}

#[test]
fn holt_winters_parses_from_the_first_call() {
    parse("holt_winters(up[5m], 0.5, 0.5)").expect("holt_winters is registered");
}

/// The walk runs on whatever a client sends: deep nesting must not take the
/// stack (it gives up instead), and nesting within the limit is followed.
/// 2 MiB is the stack of tokio's threads, where queries are parsed; this
/// build's frames are the large unoptimized ones.
#[test]
fn deep_nesting_gives_up_without_overflowing() {
    let deep = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            for query in [
                "(".repeat(100_000),
                format!("{}1 +", "-".repeat(100_000)),
                format!("{}up)", "abs(".repeat(100_000)),
                format!("{}2 +", "1 ^ ".repeat(100_000)),
            ] {
                assert_eq!(first_error(&query), None, "{}...", &query[..20]);
            }
        })
        .expect("spawn");
    deep.join().expect("no overflow");
    let query = format!("{}1 +{}", "abs(".repeat(60), ")".repeat(60));
    assert_eq!(located(&query), "1:244: parse error: unexpected \")\"");
}

/// The crate reads a range without a unit as seconds; Prometheus refuses it
/// (2.42 and 2.53 alike), and so does `parse`. Other numbers stay numbers.
#[test]
fn ranges_without_a_unit_are_refused() {
    for (query, want) in [
        (
            "rate(x[1])",
            "1:8: parse error: missing unit character in duration",
        ),
        (
            "x[ 10 ]",
            "1:4: parse error: missing unit character in duration",
        ),
        (
            "sum(rate(x[5m]))\n/ rate(y[60])",
            "2:10: parse error: missing unit character in duration",
        ),
    ] {
        let got = parse(query).expect_err(query).to_string();
        assert_eq!(got, want, "{query:?}");
    }
    for query in [
        "x[1m]",
        "x[1m:30s]",
        "x[5m:]",
        "x[1h] offset 1d",
        "topk(1, x) > 1",
        "x[1m] @ 100",
    ] {
        parse(query).unwrap_or_else(|e| panic!("{query:?}: {e}"));
    }
}
