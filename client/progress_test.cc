// Unit tests of the progress line's text: counts, rate, ETA, elapsed time,
// the bar, and fitting a narrow terminal.
#include "client/progress.h"

#include <string>

#include "gtest/gtest.h"

namespace taskq::cli {
namespace {

TEST(FormatProgress, CountsRateEtaAndElapsed) {
  EXPECT_EQ(FormatProgress(0, 0, 100, absl::Seconds(1), 80),
            "[....................] 0/100 done, 0 failed, 1s");
  // 25 in 5 s: 5.0/s, 75 left: 15 s.
  EXPECT_EQ(FormatProgress(25, 2, 100, absl::Seconds(5), 80),
            "[#####...............] 25/100 done, 2 failed, 5.0/s, ETA 15s, 5s");
  EXPECT_EQ(FormatProgress(1000, 0, 10000, absl::Seconds(20), 80),
            "[##..................] 1000/10000 done, 0 failed, 50/s, ETA 3m00s, 20s");
  // Done: no ETA.
  EXPECT_EQ(FormatProgress(3, 1, 3, absl::Milliseconds(1500), 80),
            "[####################] 3/3 done, 1 failed, 2.0/s, 1s");
  EXPECT_EQ(FormatProgress(1, 0, 10000, absl::Hours(2), 80),
            "[....................] 1/10000 done, 0 failed, 0.0/s, ETA 19998h00m, 2h00m");
}

TEST(FormatProgress, FitsANarrowTerminal) {
  // The bar goes first, then the text is cut, one column spare.
  EXPECT_EQ(FormatProgress(25, 2, 100, absl::Seconds(5), 50),
            "25/100 done, 2 failed, 5.0/s, ETA 15s, 5s");
  EXPECT_EQ(FormatProgress(25, 2, 100, absl::Seconds(5), 13), "25/100 done,");
}

TEST(ProgressLine, DisabledOnlyPrints) {
  ProgressLine progress(2, /*enabled=*/false);
  int printed = 0;
  progress.Print(ProgressLine::Count::kResult, [&] { ++printed; });
  progress.Print(ProgressLine::Count::kFailed, [&] { ++printed; });
  progress.Finish();
  progress.Print(ProgressLine::Count::kResult, [&] { ++printed; });
  EXPECT_EQ(printed, 3);
}

}  // namespace
}  // namespace taskq::cli
